//! Running a container image as a pod VM: the pod bundle the runner packs (crx-guest, the
//! pod spec, the image's layers; `crx_abi::pod::bundle`), the pod console lines, and how a
//! `pod run` ends.
//!
//! # What the kernel prints for a pod
//!
//! - `<pod>/<container>> text`: a line of the container's output (stdout or stderr);
//! - `<pod>/<container>: exited with code N`: the container's end;
//! - `<pod>/<container>: stopped: <reason>`: the VM ended before the container did;
//! - then the usual `vm0: ...` end lines (see [`crate::vm`]).
//!
//! `cargo xtask pod run` prints each container output line's `text` alone on stdout (as
//! `docker run` would), the end lines and the runner's own messages on stderr, and exits
//! with container 0's exit code ([`PodStatus::exit_status`]).

use crate::image::{repo_root, target_dir, BuildLock};
use crate::oci::Image;
use crate::setup::{self, KERNEL_TARGET};
use crate::vm::{self, Event, Host, Report, VmRun, STATUS_NO_RESULT, STATUS_STOPPED, STATUS_TIMEOUT};
use crate::{Error, Line};
use crx_abi::pod::{ContainerSpec, PodSpec, DEFAULT_PROCESS_LIMIT};
use regex::Regex;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

/// Where `cargo build --release -p crx-guest` leaves the guest kernel.
pub fn guest_kernel_path() -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release").join("crx-guest")
}

/// Builds crx-guest (release, for `x86_64-unknown-none`) and returns its path.
pub fn build_guest_kernel() -> Result<PathBuf, Error> {
    setup::ensure_kernel_target()?;
    let _lock = BuildLock::acquire()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--release", "-p", "crx-guest", "--target", KERNEL_TARGET]);
    let status = cmd.status().map_err(|e| Error::io("running cargo build", e))?;
    if !status.success() {
        return Err(Error::Failed { what: format!("{cmd:?}"), status });
    }
    let path = guest_kernel_path();
    let elf = fs::read(&path).unwrap_or_default();
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err(Error::Missing(format!(
            "cargo build -p crx-guest succeeded but left no guest kernel ELF at {} (is crx-guest a kernel binary yet?)",
            path.display()
        )));
    }
    Ok(path)
}

/// Where the busybox demo image (`--image busybox`) lives: `target/images/busybox`.
pub fn busybox_image_dir() -> PathBuf {
    target_dir().join("images").join("busybox")
}

/// The busybox demo image's directory, built from the host's static busybox (installed when
/// missing) on first use.
pub fn ensure_busybox_image() -> Result<PathBuf, Error> {
    let dir = busybox_image_dir();
    if !dir.join("index.json").exists() {
        setup::ensure(setup::BUSYBOX)?;
        crate::oci::build_busybox_image(Path::new(setup::BUSYBOX_PATH), &dir)
            .map_err(|e| Error::Missing(e.to_string()))?;
    }
    Ok(dir)
}

/// A pod of one container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRun {
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// Its argv.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Its working directory.
    pub working_dir: String,
}

impl PodRun {
    /// A pod `pod` with one container `main` running `argv` (see [`Image::argv`]) in
    /// `image`'s environment.
    pub fn new(image: &Image, args: &[String]) -> PodRun {
        PodRun {
            pod: "pod".into(),
            container: "main".into(),
            argv: image.argv(args),
            env: image.env(),
            working_dir: image.working_dir(),
        }
    }

    /// The pod spec.
    pub fn spec(&self) -> PodSpec {
        PodSpec {
            name: self.pod.clone(),
            containers: vec![ContainerSpec {
                name: self.container.clone(),
                command: self.argv.clone(),
                env: self.env.clone(),
                working_dir: self.working_dir.clone(),
            }],
            process_limit: DEFAULT_PROCESS_LIMIT,
            managed: false,
        }
    }
}

/// Packs the pod bundle: crx-guest, the spec and the layers, padded to a whole page so the
/// last layer's last page is all the bundle's.
pub fn pack(guest: &[u8], spec: &PodSpec, layers: &[(&[u8], crx_abi::LayerKind)]) -> Result<Vec<u8>, Error> {
    let json = spec.to_json().map_err(|e| Error::Missing(format!("pod spec: {e}")))?;
    let mut b = crx_abi::pod::bundle::pack(guest, &json, layers);
    b.resize(b.len().next_multiple_of(crx_abi::pod::bundle::PAGE), 0);
    Ok(b)
}

/// Packs `image` with `run` into `target/pod/<name>.pod` and returns the path.
pub fn write_bundle(guest: &Path, image: &Image, run: &PodRun, name: &str) -> Result<PathBuf, Error> {
    let elf = fs::read(guest).map_err(|e| Error::io(format!("reading {}", guest.display()), e))?;
    let layers: Vec<(&[u8], crx_abi::LayerKind)> =
        image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
    let bytes = pack(&elf, &run.spec(), &layers)?;
    write_module(&bytes, name)
}

/// Writes a boot module to `target/pod/<name>.pod`.
pub fn write_module(bytes: &[u8], name: &str) -> Result<PathBuf, Error> {
    let dir = target_dir().join("pod");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{name}.pod"));
    fs::write(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// The kernel command line of a pod run: `vm.mem` only when asked for (the kernel's pod
/// default is 64 MiB), then `extra`.
pub fn kernel_cmdline(mem_mib: Option<u32>, extra: &str) -> String {
    let mut words: Vec<String> = mem_mib.map(|m| format!("vm.mem={m}")).into_iter().collect();
    words.extend(extra.split_whitespace().map(str::to_string));
    words.join(" ")
}

/// One pod console line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodEvent {
    /// `<pod>/<container>> text`.
    Output {
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// Text.
        text: String,
    },
    /// `<pod>/<container>: exited with code N`.
    Exited {
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// Code.
        code: i32,
    },
    /// `<pod>/<container>: N console lines dropped (rate limit)`: lines the hypervisor kept
    /// in the container's log but did not print.
    Dropped {
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// Lines.
        count: u64,
    },
    /// `<pod>/<container>: stopped: reason`.
    Stopped {
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// Why.
        reason: String,
    },
}

impl PodEvent {
    /// Parses a pod line (anchored); other lines give `None`.
    pub fn parse(line: &str) -> Option<PodEvent> {
        static RE: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(> |: )(.*)$")
                .expect("the pod-line pattern is valid")
        });
        let c = RE.captures(line)?;
        let pod = c.get(1)?.as_str().to_string();
        let container = c.get(2)?.as_str().to_string();
        let rest = c.get(4)?.as_str();
        if c.get(3)?.as_str() == "> " {
            return Some(PodEvent::Output { pod, container, text: rest.to_string() });
        }
        if let Some(code) = rest.strip_prefix("exited with code ") {
            return Some(PodEvent::Exited { pod, container, code: code.trim_end().parse().ok()? });
        }
        if let Some(n) = rest.strip_suffix(" console lines dropped (rate limit)") {
            return Some(PodEvent::Dropped { pod, container, count: n.parse().ok()? });
        }
        let reason = rest.strip_prefix("stopped: ")?;
        Some(PodEvent::Stopped { pod, container, reason: reason.trim_end().to_string() })
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEnd {
    /// With this exit code.
    Exited(i32),
    /// Its VM was stopped (or exited) first.
    Stopped(String),
}

/// What the pod printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodReport {
    /// Output lines of each container, by name, in order of first appearance.
    pub output: Vec<(String, Vec<String>)>,
    /// How each container ended.
    pub ends: Vec<(String, ContainerEnd)>,
    /// Lines of each container the console's rate limit refused.
    pub dropped: Vec<(String, u64)>,
}

impl PodReport {
    /// Takes one line into account; returns what it was.
    pub fn feed(&mut self, line: &str) -> Option<PodEvent> {
        let e = PodEvent::parse(line)?;
        match &e {
            PodEvent::Output { container, text, .. } => {
                match self.output.iter_mut().find(|(c, _)| c == container) {
                    Some((_, lines)) => lines.push(text.clone()),
                    None => self.output.push((container.clone(), vec![text.clone()])),
                }
            }
            PodEvent::Exited { container, code, .. } => self.set_end(container, ContainerEnd::Exited(*code)),
            PodEvent::Stopped { container, reason, .. } => {
                self.set_end(container, ContainerEnd::Stopped(reason.clone()))
            }
            PodEvent::Dropped { container, count, .. } => {
                match self.dropped.iter_mut().find(|(c, _)| c == container) {
                    Some((_, n)) => *n += count,
                    None => self.dropped.push((container.clone(), *count)),
                }
            }
        }
        Some(e)
    }

    fn set_end(&mut self, container: &str, end: ContainerEnd) {
        match self.ends.iter_mut().find(|(c, _)| c == container) {
            Some((_, e)) => *e = end,
            None => self.ends.push((container.to_string(), end)),
        }
    }

    /// A container's output lines.
    pub fn lines(&self, container: &str) -> &[String] {
        self.output.iter().find(|(c, _)| c == container).map(|(_, l)| l.as_slice()).unwrap_or_default()
    }

    /// How many of a container's lines the console refused.
    pub fn dropped(&self, container: &str) -> u64 {
        self.dropped.iter().find(|(c, _)| c == container).map_or(0, |(_, n)| *n)
    }

    /// How a container ended.
    pub fn end(&self, container: &str) -> Option<&ContainerEnd> {
        self.ends.iter().find(|(c, _)| c == container).map(|(_, e)| e)
    }
}

/// How a `pod run` ended, from its container's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStatus {
    /// The container exited with this code.
    Exited(i32),
    /// The container (or its VM, before it started) was stopped for this reason.
    Stopped(String),
    /// The timeout ran out first.
    TimedOut,
    /// The node ended without the container or its VM ending.
    NoResult,
}

impl PodStatus {
    /// The status of `container` from the pod report and the VM run.
    pub fn of(pod: &PodReport, container: &str, run: &VmRun) -> PodStatus {
        match pod.end(container) {
            Some(ContainerEnd::Exited(c)) => PodStatus::Exited(*c),
            Some(ContainerEnd::Stopped(r)) => PodStatus::Stopped(r.clone()),
            None => match run.end(0) {
                Some(vm::End::Stopped(r)) => PodStatus::Stopped(r.clone()),
                Some(vm::End::Exited(c)) => {
                    PodStatus::Stopped(format!("the pod VM exited with code {c} without a container exit"))
                }
                None if run.timed_out => PodStatus::TimedOut,
                None => PodStatus::NoResult,
            },
        }
    }

    /// The process exit status: the container's code (low 8 bits), 124 on timeout, 125 when
    /// stopped without an exit code, 126 without a result.
    pub fn exit_status(&self) -> u8 {
        match self {
            PodStatus::Exited(c) => *c as u8,
            PodStatus::Stopped(_) => STATUS_STOPPED,
            PodStatus::TimedOut => STATUS_TIMEOUT,
            PodStatus::NoResult => STATUS_NO_RESULT,
        }
    }

    /// A sentence for the user.
    pub fn describe(&self) -> String {
        match self {
            PodStatus::Exited(c) => format!("the container exited with code {c}"),
            PodStatus::Stopped(r) => format!("the container was stopped: {r}"),
            PodStatus::TimedOut => "the timeout ran out before the container ended".into(),
            PodStatus::NoResult => "the node ended without the container ending".into(),
        }
    }
}

/// What [`run`] calls with every console line: the line, its VM event, its pod event.
pub type OnPodLine<'a> = dyn FnMut(&Line, Option<&Event>, Option<&PodEvent>) + 'a;

/// A finished pod run.
#[derive(Debug, Clone)]
pub struct PodOutcome {
    /// The VM run underneath.
    pub run: VmRun,
    /// The pod's lines.
    pub pod: PodReport,
    /// The container's verdict.
    pub status: PodStatus,
}

/// Boots `host` with the pod bundle `module` and follows it until the VM ends (or
/// `timeout`); `on_line` sees every line with its pod event.
pub fn run(
    host: &Host,
    name: &str,
    module: PathBuf,
    cmdline: String,
    container: &str,
    timeout: Option<Duration>,
    on_line: &mut OnPodLine<'_>,
) -> Result<PodOutcome, Error> {
    run_until(host, name, module, cmdline, container, timeout, &|_| false, on_line)
}

/// As [`run`], and stops the emulator as soon as `stop` says so of the pod's lines so far
/// (for a pod whose VM never ends on its own, such as one with a container that spins).
#[allow(clippy::too_many_arguments)]
pub fn run_until(
    host: &Host,
    name: &str,
    module: PathBuf,
    cmdline: String,
    container: &str,
    timeout: Option<Duration>,
    stop: &dyn Fn(&PodReport) -> bool,
    on_line: &mut OnPodLine<'_>,
) -> Result<PodOutcome, Error> {
    let machine = host.boot_module(name, module, cmdline)?;
    let pod = std::cell::RefCell::new(PodReport::default());
    let run = vm::follow(machine, name, timeout, &|_: &Report| stop(&pod.borrow()), &mut |line, event| {
        let pe = if line.console { pod.borrow_mut().feed(&line.text) } else { None };
        on_line(line, event, pe.as_ref());
    })?;
    let pod = pod.into_inner();
    let status = PodStatus::of(&pod, container, &run);
    Ok(PodOutcome { run, pod, status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Compression, Layer, RunConfig};

    #[test]
    fn pod_lines_parse() {
        assert_eq!(
            PodEvent::parse("pod/main> hello: world"),
            Some(PodEvent::Output {
                pod: "pod".into(),
                container: "main".into(),
                text: "hello: world".into()
            })
        );
        assert_eq!(
            PodEvent::parse("pod/main: exited with code 127"),
            Some(PodEvent::Exited { pod: "pod".into(), container: "main".into(), code: 127 })
        );
        assert_eq!(
            PodEvent::parse("p/c: stopped: triple fault"),
            Some(PodEvent::Stopped { pod: "p".into(), container: "c".into(), reason: "triple fault".into() })
        );
        assert_eq!(PodEvent::parse("vm0> pod/main: exited with code 0"), None);
        assert_eq!(PodEvent::parse("pod/main: something else"), None);
        let mut r = PodReport::default();
        for l in ["p/c: 7 console lines dropped (rate limit)", "p/c: 3 console lines dropped (rate limit)"] {
            assert!(matches!(r.feed(l), Some(PodEvent::Dropped { count: 3 | 7, .. })));
        }
        assert_eq!((r.dropped("c"), r.dropped("d")), (10, 0));
        assert_eq!(PodEvent::parse("p/c: x console lines dropped (rate limit)"), None);
        assert_eq!(PodEvent::parse("a b/c> x"), None);
        let mut r = PodReport::default();
        for l in ["pod/main> a", "pod/main> exited with code 3", "pod/main: exited with code 1", "junk"] {
            r.feed(l);
        }
        assert_eq!(r.lines("main"), ["a", "exited with code 3"]);
        assert_eq!(r.end("main"), Some(&ContainerEnd::Exited(1)));
        assert_eq!(r.end("other"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(PodStatus::Exited(1).exit_status(), 1);
        assert_eq!(PodStatus::Exited(256 + 3).exit_status(), 3);
        assert_eq!(PodStatus::Exited(-1).exit_status(), 255);
        assert_eq!(PodStatus::Stopped("x".into()).exit_status(), 125);
        assert_eq!(PodStatus::TimedOut.exit_status(), 124);
        assert_eq!(PodStatus::NoResult.exit_status(), 126);
    }

    #[test]
    fn bundles_hold_the_spec_and_page_aligned_layers() {
        let image = Image {
            layers: vec![
                Layer { bytes: vec![1; 100], compression: Compression::Gzip },
                Layer { bytes: vec![2; 5000], compression: Compression::None },
            ],
            config: RunConfig {
                entrypoint: None,
                cmd: Some(vec!["sh".into()]),
                env: Some(vec!["PATH=/bin".into()]),
                working_dir: None,
            },
            id: String::new(),
        };
        let run = PodRun::new(&image, &["echo".into(), "hi".into()]);
        assert_eq!(run.argv, ["echo", "hi"]);
        assert_eq!(PodRun::new(&image, &[]).argv, ["sh"]);
        let layers: Vec<_> =
            image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
        let b = pack(b"\x7fELF...", &run.spec(), &layers).unwrap();
        assert_eq!(b.len() % 4096, 0, "padded to a page");
        let p = crx_abi::pod::bundle::PodBundle::parse(&b).unwrap();
        let spec = PodSpec::from_json(p.spec()).unwrap();
        assert_eq!(spec.containers[0].command, ["echo", "hi"]);
        assert_eq!(spec.containers[0].env, ["PATH=/bin"]);
        assert_eq!(spec.containers[0].working_dir, "/");
        assert_eq!(p.layer_count(), 2);
        assert_eq!(p.layer(1).unwrap().bytes, &[2u8; 5000][..]);
        assert_eq!(p.layer(0).unwrap().kind, crx_abi::LayerKind::TarGzip);
        for l in p.layers() {
            assert_eq!(l.offset % 4096, 0);
            assert!((l.offset + l.bytes.len()).next_multiple_of(4096) <= b.len());
        }
        // An empty command is refused before anything boots.
        let empty = PodRun { argv: vec![], ..run };
        assert!(pack(b"x", &empty.spec(), &[]).is_err());
    }

    #[test]
    fn cmdlines() {
        assert_eq!(kernel_cmdline(None, ""), "");
        assert_eq!(kernel_cmdline(Some(128), " log=debug "), "vm.mem=128 log=debug");
    }
}
