//! A pod VM's containers as the hypervisor sees them: one bounded log per container,
//! console lines, and who has exited.
//!
//! Console contract (pure: the caller prints each [`PodLine`]):
//! * output of container `c` of pod `p` (stdout and stderr, each split into lines on its
//!   own, non-printable bytes shown as `?`, lines cut at 256 bytes): `p/c> text`;
//! * its end, from `CONTAINER_EXIT`: `p/c: exited with code N`;
//! * when the VM ends, every container that has not reported its end:
//!   `p/c: exited with code 137` if the VM ran out of memory (the OOM killer's code),
//!   else `p/c: stopped: <reason>` (the VM's stop reason, or that the VM exited first).
//!
//! Every byte goes to the container's log ring; the console is rate-limited per container
//! like a VM's console ([`super::console::BURST_LINES`] lines at once, then
//! [`super::console::LINES_PER_SEC`] a second), so a container writing in a loop cannot
//! flood the serial line nor silence its neighbours. Lines refused are counted and
//! reported as `p/c: <n> console lines dropped (rate limit)` before the next line let
//! through, and before the container's end line. End lines are never refused.
//!
//! Names come from a checked [`PodSpec`] (`crx_abi::pod::valid_name`), so they hold no
//! `/`, `>`, `:` or spaces and a container cannot forge another's lines.
#![forbid(unsafe_code)]

use super::console::{LineBuffer, RateLimit, BURST_LINES, LINES_PER_SEC};
use super::exit::StopReason;
use super::podlog::LineLog;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use crx_abi::pod::{Command, PodSpec};
use crx_abi::{LayerInfo, STREAM_STDERR, STREAM_STDOUT};

/// Bytes of log kept per container; older bytes are dropped.
pub const LOG_BYTES: usize = 64 << 10;
/// Exit code reported for containers of a VM that ran out of memory.
pub const OOM_EXIT_CODE: i32 = 137;
/// Commands waiting for a managed pod's guest; more are refused until it reads them.
pub const MAX_COMMANDS: usize = 64;

/// A bounded byte log: keeps the last [`LogRing::capacity`] bytes written.
#[derive(Debug, Clone)]
pub struct LogRing {
    buf: Vec<u8>,
    cap: usize,
    /// Index of the oldest byte once the ring is full.
    head: usize,
    dropped: u64,
}

impl LogRing {
    /// An empty ring of `cap` bytes (the storage grows as bytes come, up to `cap`).
    pub fn new(cap: usize) -> LogRing {
        LogRing { buf: Vec::new(), cap, head: 0, dropped: 0 }
    }

    /// The most bytes kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Appends `bytes`, dropping the oldest bytes beyond the capacity. Returns false when
    /// the heap could not grow the ring (the bytes are then dropped too).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let mut ok = true;
        for &b in bytes {
            if self.buf.len() < self.cap {
                if self.buf.try_reserve(1).is_err() {
                    self.dropped += 1;
                    ok = false;
                    continue;
                }
                self.buf.push(b);
            } else if let Some(slot) = self.buf.get_mut(self.head) {
                *slot = b;
                self.head = (self.head + 1) % self.cap;
                self.dropped += 1;
            } else {
                // A zero-capacity ring keeps nothing.
                self.dropped += 1;
            }
        }
        ok
    }

    /// The kept bytes, oldest first, as two slices.
    pub fn contents(&self) -> (&[u8], &[u8]) {
        let (a, b) = self.buf.split_at(self.head.min(self.buf.len()));
        (b, a)
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// One container of a running pod.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its output, both streams as they came.
    pub log: LogRing,
    out: LineBuffer,
    err: LineBuffer,
    /// The console's rate limit on its lines.
    limit: RateLimit,
    /// Its exit code, once reported.
    pub exit: Option<i32>,
    /// Whether the guest's out-of-memory killer ended one of its processes (this instance).
    pub oom_killed: bool,
    /// The current instance's lines, for `kubectl logs`.
    pub lines: LineLog,
    /// The previous instance's lines, once it was restarted (`kubectl logs --previous`).
    pub previous: Option<LineLog>,
    /// Starts so far (a managed pod's container starts on command; others once, at boot).
    pub starts: u32,
    /// When the current instance started and ended (monotonic ns).
    pub started_ns: u64,
    /// When it ended.
    pub ended_ns: u64,
}

/// A console line of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodLine<'a> {
    /// A line of a container's output.
    Output {
        /// Pod name.
        pod: &'a str,
        /// Container name.
        container: &'a str,
        /// The text (printable ASCII).
        text: &'a str,
    },
    /// A container's end.
    Exited {
        /// Pod name.
        pod: &'a str,
        /// Container name.
        container: &'a str,
        /// Exit code.
        code: i32,
    },
    /// This many of a container's lines were refused by the console's rate limit (they
    /// are in its log all the same).
    Dropped {
        /// Pod name.
        pod: &'a str,
        /// Container name.
        container: &'a str,
        /// Lines refused since the last report.
        count: u64,
    },
    /// A container that ended with its VM.
    Stopped {
        /// Pod name.
        pod: &'a str,
        /// Container name.
        container: &'a str,
        /// Why.
        reason: VmEnd,
    },
}

/// How a pod VM ended, for the containers that had not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmEnd {
    /// The VM exited with this code before the container reported its end.
    Exited(i32),
    /// The VM was stopped.
    Stopped(StopReason),
}

impl fmt::Display for VmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmEnd::Exited(c) => write!(f, "the pod VM exited (code {c}) before the container ended"),
            VmEnd::Stopped(r) => write!(f, "{r}"),
        }
    }
}

impl fmt::Display for PodLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodLine::Output { pod, container, text } => write!(f, "{pod}/{container}> {text}"),
            PodLine::Exited { pod, container, code } => {
                write!(f, "{pod}/{container}: exited with code {code}")
            }
            PodLine::Dropped { pod, container, count } => {
                write!(f, "{pod}/{container}: {count} console lines dropped (rate limit)")
            }
            PodLine::Stopped { pod, container, reason } => write!(f, "{pod}/{container}: stopped: {reason}"),
        }
    }
}

/// Why a pod hypercall was refused (the guest gets `Error::Invalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodError {
    /// No container has this index.
    NoContainer(u64),
    /// Not stdout (1) or stderr (2).
    BadStream(u64),
    /// The container has reported its end already.
    AlreadyExited(u64),
}

/// A pod running in one VM.
#[derive(Debug, Clone)]
pub struct PodState {
    /// Commands for the guest, oldest first ([`crx_abi::nr::POD_CONTROL`]).
    pub commands: VecDeque<Command>,
    /// The pod's name.
    pub name: String,
    /// Its containers, in the spec's order.
    pub containers: Vec<Container>,
    /// The spec as the guest reads it.
    pub spec_json: Arc<[u8]>,
    /// Whether the node drives the containers ([`PodSpec::managed`]).
    pub managed: bool,
    /// The layers as the guest finds them.
    pub layers: Vec<LayerInfo>,
}

impl PodState {
    /// The state of a pod that has not started, from its checked spec.
    pub fn new(spec: &PodSpec, spec_json: Arc<[u8]>, layers: Vec<LayerInfo>) -> PodState {
        let containers = spec
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                log: LogRing::new(LOG_BYTES),
                out: LineBuffer::default(),
                err: LineBuffer::default(),
                limit: RateLimit::new(BURST_LINES, LINES_PER_SEC),
                exit: None,
                oom_killed: false,
                lines: LineLog::new(LOG_BYTES),
                previous: None,
                starts: u32::from(!spec.managed),
                started_ns: 0,
                ended_ns: 0,
            })
            .collect();
        PodState {
            commands: VecDeque::new(),
            name: spec.name.clone(),
            containers,
            spec_json,
            managed: spec.managed,
            layers,
        }
    }

    /// Queues a command for the guest. A start of a container that has ended begins its
    /// next instance here (its lines become the previous instance's). False when the
    /// queue is full, the container does not exist, or the pod is not managed.
    pub fn command(&mut self, cmd: Command, now_ns: u64) -> bool {
        let i = match cmd {
            Command::Start { container } | Command::Signal { container, .. } => usize::from(container),
        };
        if !self.managed || self.commands.len() >= MAX_COMMANDS || i >= self.containers.len() {
            return false;
        }
        if let (Command::Start { .. }, Some(c)) = (cmd, self.containers.get_mut(i)) {
            if c.starts > 0 && c.exit.is_none() {
                return false;
            }
            if c.starts > 0 {
                c.previous = Some(core::mem::replace(&mut c.lines, LineLog::new(LOG_BYTES)));
            }
            c.exit = None;
            c.oom_killed = false;
            c.starts += 1;
            c.started_ns = now_ns;
        }
        self.commands.push_back(cmd);
        true
    }

    /// The next command's encoding for [`crx_abi::nr::POD_CONTROL`], 0 when none.
    pub fn next_command(&mut self) -> u64 {
        self.commands.pop_front().map_or(0, Command::to_raw)
    }

    /// Checks a `LOG_WRITE`'s container and stream before its bytes are read.
    pub fn check_log(&self, container: u64, stream: u64) -> Result<(), PodError> {
        if stream != STREAM_STDOUT && stream != STREAM_STDERR {
            return Err(PodError::BadStream(stream));
        }
        self.get(container).map(|_| ())
    }

    /// Whether the pod has container `container`.
    pub fn has_container(&self, container: u64) -> bool {
        self.get(container).is_ok()
    }

    fn get(&self, container: u64) -> Result<&Container, PodError> {
        usize::try_from(container)
            .ok()
            .and_then(|i| self.containers.get(i))
            .ok_or(PodError::NoContainer(container))
    }

    /// Output of a container at `now_ns` (monotonic): kept in its log, and line by line
    /// on the console as far as the rate limit lets it.
    pub fn log(
        &mut self,
        container: u64,
        stream: u64,
        bytes: &[u8],
        now_ns: u64,
        mut emit: impl FnMut(PodLine<'_>),
    ) -> Result<(), PodError> {
        self.check_log(container, stream)?;
        let pod = self.name.as_str();
        let c = usize::try_from(container)
            .ok()
            .and_then(|i| self.containers.get_mut(i))
            .ok_or(PodError::NoContainer(container))?;
        c.log.push(bytes);
        c.lines.push(stream, bytes, now_ns);
        let name = c.name.as_str();
        let line = if stream == STREAM_STDERR { &mut c.err } else { &mut c.out };
        let limit = &mut c.limit;
        line.push(bytes, |text| pass(limit, now_ns, pod, name, text, &mut emit));
        Ok(())
    }

    /// A container's end (once), at `now_ns`.
    pub fn exit(
        &mut self,
        container: u64,
        code: i32,
        oom_killed: bool,
        now_ns: u64,
        mut emit: impl FnMut(PodLine<'_>),
    ) -> Result<(), PodError> {
        let pod = self.name.as_str();
        let c = usize::try_from(container)
            .ok()
            .and_then(|i| self.containers.get_mut(i))
            .ok_or(PodError::NoContainer(container))?;
        if c.exit.is_some() || c.starts == 0 {
            return Err(PodError::AlreadyExited(container));
        }
        Self::flush(pod, c, now_ns, &mut emit);
        c.exit = Some(code);
        c.oom_killed = oom_killed;
        c.ended_ns = now_ns;
        emit(PodLine::Exited { pod, container: &c.name, code });
        Ok(())
    }

    /// Prints the partial lines (as far as the limit lets them) and the count of refused
    /// lines not reported yet.
    fn flush(pod: &str, c: &mut Container, now_ns: u64, emit: &mut impl FnMut(PodLine<'_>)) {
        let name = c.name.as_str();
        let limit = &mut c.limit;
        c.out.flush(|text| pass(limit, now_ns, pod, name, text, emit));
        c.err.flush(|text| pass(limit, now_ns, pod, name, text, emit));
        c.lines.flush(now_ns);
        let count = c.limit.take_dropped();
        if count > 0 {
            emit(PodLine::Dropped { pod, container: name, count });
        }
    }

    /// The VM ended: flushes every container's partial lines and reports those that had
    /// not ended (see the module documentation). Returns the first container's exit code
    /// as it stands now, if it has one.
    pub fn vm_ended(&mut self, end: VmEnd, now_ns: u64, mut emit: impl FnMut(PodLine<'_>)) -> Option<i32> {
        let pod = self.name.as_str();
        for c in self.containers.iter_mut() {
            Self::flush(pod, c, now_ns, &mut emit);
            if c.exit.is_some() || c.starts == 0 {
                continue;
            }
            c.ended_ns = now_ns;
            if end == VmEnd::Stopped(StopReason::OutOfMemory) {
                c.exit = Some(OOM_EXIT_CODE);
                emit(PodLine::Exited { pod, container: &c.name, code: OOM_EXIT_CODE });
            } else {
                emit(PodLine::Stopped { pod, container: &c.name, reason: end });
            }
        }
        self.containers.first().and_then(|c| c.exit)
    }

    /// Layer `index`'s record, if there is such a layer.
    pub fn layer(&self, index: u64) -> Option<LayerInfo> {
        usize::try_from(index).ok().and_then(|i| self.layers.get(i)).copied()
    }
}

/// One output line through a container's rate limit.
fn pass(
    limit: &mut RateLimit,
    now_ns: u64,
    pod: &str,
    container: &str,
    text: &str,
    emit: &mut impl FnMut(PodLine<'_>),
) {
    if let Some(count) = limit.admit(now_ns) {
        if count > 0 {
            emit(PodLine::Dropped { pod, container, count });
        }
        emit(PodLine::Output { pod, container, text });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn pod() -> PodState {
        let spec = PodSpec::from_json(
            br#"{"name":"demo","containers":[{"name":"main","command":["x"]},{"name":"side","command":["y"]}]}"#,
        )
        .unwrap();
        PodState::new(&spec, Arc::from(&b"{}"[..]), Vec::new())
    }

    fn run(f: impl FnOnce(&mut dyn FnMut(PodLine<'_>))) -> Vec<String> {
        let mut out = Vec::new();
        f(&mut |l| out.push(l.to_string()));
        out
    }

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let mut r = LogRing::new(8);
        assert!(r.is_empty());
        r.push(b"abc");
        assert_eq!(r.contents(), (&b"abc"[..], &b""[..]));
        r.push(b"defghij");
        let (a, b) = r.contents();
        assert_eq!([a, b].concat(), b"cdefghij");
        assert_eq!(r.dropped(), 2);
        r.push(&[b'z'; 20]);
        let (a, b) = r.contents();
        assert_eq!([a, b].concat(), b"zzzzzzzz");
        assert_eq!(r.len(), 8);
        assert_eq!(r.dropped(), 22);
        let mut z = LogRing::new(0);
        z.push(b"x");
        assert_eq!((z.len(), z.dropped()), (0, 1));
        let mut big = LogRing::new(LOG_BYTES);
        for i in 0..100u32 {
            big.push(&[i as u8; 1000]);
        }
        assert_eq!(big.len(), LOG_BYTES);
        assert_eq!(big.dropped(), 100_000 - LOG_BYTES as u64);
        let (a, b) = big.contents();
        assert_eq!(*[a, b].concat().last().unwrap(), 99);
        assert_eq!([a, b].concat()[0], ((100_000 - LOG_BYTES) / 1000) as u8);
    }

    #[test]
    fn lines_are_prefixed_per_container_and_stream() {
        let mut p = pod();
        let out = run(|e| {
            p.log(0, 1, b"hel", 0, &mut *e).unwrap();
            p.log(0, 2, b"oops\n", 0, &mut *e).unwrap();
            p.log(0, 1, b"lo\n\x1b[31mred\n", 0, &mut *e).unwrap();
            p.log(1, 1, b"partial", 0, &mut *e).unwrap();
            p.exit(1, 3, false, 0, &mut *e).unwrap();
        });
        assert_eq!(
            out,
            [
                "demo/main> oops",
                "demo/main> hello",
                "demo/main> ?[31mred",
                "demo/side> partial",
                "demo/side: exited with code 3"
            ]
        );
        let (a, b) = p.containers[0].log.contents();
        assert_eq!([a, b].concat(), b"heloops\nlo\n\x1b[31mred\n");
    }

    #[test]
    fn bad_indices_and_streams_are_refused() {
        let mut p = pod();
        let out = run(|e| {
            assert_eq!(p.log(2, 1, b"x", 0, &mut *e), Err(PodError::NoContainer(2)));
            assert_eq!(p.log(u64::MAX, 1, b"x", 0, &mut *e), Err(PodError::NoContainer(u64::MAX)));
            assert_eq!(p.log(0, 0, b"x", 0, &mut *e), Err(PodError::BadStream(0)));
            assert_eq!(p.log(0, 3, b"x", 0, &mut *e), Err(PodError::BadStream(3)));
            assert_eq!(p.exit(5, 0, false, 0, &mut *e), Err(PodError::NoContainer(5)));
            assert_eq!(p.exit(0, 0, false, 0, &mut *e), Ok(()));
            assert_eq!(p.exit(0, 1, false, 0, &mut *e), Err(PodError::AlreadyExited(0)));
        });
        assert_eq!(out, ["demo/main: exited with code 0"]);
        assert!(p.containers[0].log.is_empty());
    }

    #[test]
    fn vm_end_reports_the_containers_still_running() {
        let mut p = pod();
        let out = run(|e| {
            p.log(1, 1, b"half", 0, &mut *e).unwrap();
            p.exit(0, 0, false, 0, &mut *e).unwrap();
            assert_eq!(p.vm_ended(VmEnd::Stopped(StopReason::TripleFault), 0, &mut *e), Some(0));
        });
        assert_eq!(
            out,
            ["demo/main: exited with code 0", "demo/side> half", "demo/side: stopped: triple fault"]
        );
        let mut p = pod();
        let out = run(|e| {
            assert_eq!(p.vm_ended(VmEnd::Stopped(StopReason::OutOfMemory), 0, &mut *e), Some(137));
        });
        assert_eq!(out, ["demo/main: exited with code 137", "demo/side: exited with code 137"]);
        let mut p = pod();
        let out = run(|e| {
            assert_eq!(p.vm_ended(VmEnd::Exited(4), 0, &mut *e), None);
        });
        assert_eq!(out[0], "demo/main: stopped: the pod VM exited (code 4) before the container ended");
    }

    #[test]
    fn a_flooding_container_is_cut_to_the_limit_and_its_neighbour_is_not() {
        const SEC: u64 = 1_000_000_000;
        let mut p = pod();
        let (mut main_lines, mut dropped, mut side) = (0u64, 0u64, Vec::new());
        let mut seen = Vec::new();
        let mut count = |l: PodLine<'_>| match l {
            PodLine::Output { container: "main", .. } => main_lines += 1,
            PodLine::Dropped { container: "main", count, .. } => dropped += count,
            PodLine::Output { container: "side", text, .. } => side.push(text.to_string()),
            other => seen.push(other.to_string()),
        };
        // 10 000 lines of "main" within a millisecond, with "side" talking in between.
        for k in 0..10_000u64 {
            p.log(0, 1, b"spam\n", SEC + k * 100, &mut count).unwrap();
            if k % 1000 == 0 {
                p.log(1, 1, format!("side {k}\n").as_bytes(), SEC + k * 100, &mut count).unwrap();
            }
        }
        p.exit(0, 0, false, SEC + SEC / 1000, &mut count).unwrap();
        assert_eq!(main_lines, u64::from(BURST_LINES));
        assert_eq!(dropped, 10_000 - u64::from(BURST_LINES), "every refused line is counted");
        assert_eq!(side.len(), 10, "the neighbour's lines all come through: {side:?}");
        assert_eq!(seen, ["demo/main: exited with code 0"], "the end line is never refused");
        // The log keeps what the console refused (the newest 64 KiB).
        assert_eq!(p.containers[0].log.len() + p.containers[0].log.dropped() as usize, 50_000);
        // The count comes before the end line, and a second later lines pass again.
        let mut p = pod();
        let out = run(|e| {
            for _ in 0..BURST_LINES + 3 {
                p.log(1, 2, b"x\n", 0, &mut *e).unwrap();
            }
            p.log(1, 2, b"late\n", SEC, &mut *e).unwrap();
            for _ in 0..BURST_LINES {
                p.log(1, 2, b"y\n", SEC, &mut *e).unwrap();
            }
            p.exit(1, 1, false, SEC, &mut *e).unwrap();
        });
        let tail: Vec<&str> =
            out.iter().map(String::as_str).filter(|l| !l.ends_with("> x") && !l.ends_with("> y")).collect();
        assert_eq!(
            tail,
            [
                "demo/side: 3 console lines dropped (rate limit)",
                "demo/side> late",
                "demo/side: 81 console lines dropped (rate limit)",
                "demo/side: exited with code 1"
            ]
        );
    }

    #[test]
    fn layers_by_index() {
        let l = LayerInfo { gpa: crx_abi::layout::LAYERS_BASE, len: 10, kind: 0, _pad: 0 };
        let p = PodState::new(&pod_spec(), Arc::from(&b"{}"[..]), alloc::vec![l]);
        assert_eq!(p.layer(0), Some(l));
        assert_eq!(p.layer(1), None);
        assert_eq!(p.layer(u64::MAX), None);
    }

    #[test]
    fn a_managed_pod_starts_on_command_and_keeps_the_previous_instance() {
        let spec = PodSpec::from_json(
            br#"{"name":"m","managed":true,"containers":[{"name":"a","command":["x"]},{"name":"b","command":["y"]}]}"#,
        )
        .unwrap();
        let mut p = PodState::new(&spec, Arc::from(&b"{}"[..]), Vec::new());
        let quiet = |_: PodLine<'_>| {};
        // Nothing has started: an exit report is refused, and there is no command.
        assert_eq!(p.next_command(), 0);
        assert!(p.exit(0, 0, false, 1, quiet).is_err());
        assert!(p.command(Command::Start { container: 0 }, 10));
        assert!(!p.command(Command::Start { container: 0 }, 11), "running already");
        assert!(!p.command(Command::Start { container: 9 }, 11), "no such container");
        assert_eq!(Command::from_raw(p.next_command()), Some(Command::Start { container: 0 }));
        assert_eq!(p.next_command(), 0);
        p.log(
            0,
            1,
            b"first run
",
            20,
            quiet,
        )
        .unwrap();
        p.exit(0, 137, true, 30, quiet).unwrap();
        assert!(p.containers[0].oom_killed);
        assert!(p.exit(0, 3, false, 31, quiet).is_err(), "one end per instance");
        assert_eq!(
            (p.containers[0].exit, p.containers[0].started_ns, p.containers[0].ended_ns),
            (Some(137), 10, 30)
        );
        // The restart: a new instance, the old lines kept as the previous one.
        assert!(p.command(Command::Start { container: 0 }, 40));
        assert_eq!((p.containers[0].exit, p.containers[0].starts), (None, 2));
        assert!(!p.containers[0].oom_killed, "a new instance was not OOM-killed");
        p.log(0, 2, b"second", 50, quiet).unwrap();
        p.exit(0, 0, false, 60, quiet).unwrap();
        let prev: Vec<_> =
            p.containers[0].previous.as_ref().unwrap().lines().map(|l| l.text.clone()).collect();
        let cur: Vec<_> = p.containers[0].lines.lines().map(|l| (l.stream, l.text.clone())).collect();
        assert_eq!(
            (prev, cur),
            (alloc::vec![String::from("first run")], alloc::vec![(2, String::from("second"))])
        );
        // Signals queue; the queue is bounded; the never-started container reports nothing.
        assert_eq!(Command::from_raw(p.next_command()), Some(Command::Start { container: 0 }));
        for _ in 0..MAX_COMMANDS {
            assert!(p.command(Command::Signal { container: 1, signal: 15 }, 70));
        }
        assert!(!p.command(Command::Signal { container: 1, signal: 9 }, 70), "queue full");
        let mut ended = Vec::new();
        p.vm_ended(VmEnd::Stopped(StopReason::Killed), 80, |l| ended.push(l.to_string()));
        assert!(ended.is_empty(), "{ended:?}");
        // An unmanaged pod takes no commands.
        let mut u = PodState::new(&pod_spec(), Arc::from(&b"{}"[..]), Vec::new());
        assert!(!u.command(Command::Start { container: 0 }, 1));
    }

    fn pod_spec() -> PodSpec {
        PodSpec::from_json(br#"{"name":"p","containers":[{"name":"c","command":["x"]}]}"#).unwrap()
    }
}
