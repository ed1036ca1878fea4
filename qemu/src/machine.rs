//! A running node: an emulator whose output is collected line by line in the background,
//! waited on with timeouts, and killed (its whole process group) when dropped.

use crate::console::{is_bochs_chatter, strip_terminal};
use crate::emulator::{Bochs, BochsFiles, Qemu};
use crate::Error;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use regex::Regex;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Which emulator runs the node; it decides what counts as console output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU: everything it prints is the console (plus the odd warning on stderr).
    Qemu,
    /// Bochs under a pseudo-terminal: its own log lines and banners are mixed in.
    Bochs,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When its end arrived, from the emulator's start.
    pub at: Duration,
    /// The text, without terminal escapes or carriage returns.
    pub text: String,
    /// Whether it is the node's console rather than the emulator talking about itself.
    pub console: bool,
}

#[derive(Default)]
struct Collected {
    lines: Vec<Line>,
    open_streams: usize,
}

type Shared = Arc<(Mutex<Collected>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, Collected> {
    // A reader thread that panicked leaves consistent data behind: lines are pushed whole.
    shared.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The node's name.
    pub name: String,
    /// The emulator's exit status.
    pub status: ExitStatus,
    /// Everything it printed.
    pub lines: Vec<Line>,
}

impl Outcome {
    /// The exit code (`None` when a signal ended it). Under QEMU, 33 means the kernel
    /// reported success and 35 failure.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The console lines' text.
    pub fn console(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter(|l| l.console).map(|l| l.text.as_str())
    }

    /// The first console line matching `re`.
    pub fn find(&self, re: &Regex) -> Option<&str> {
        self.console().find(|l| re.is_match(l))
    }

    /// Panics with `msg` and the whole log unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, msg: &str) {
        if !ok {
            panic!(
                "{}: {msg} (exit status {})\n{}",
                self.name,
                self.status,
                format_log(&self.name, &self.lines)
            );
        }
    }
}

/// The log as shown on failure: every line, console or not, with its time.
pub fn format_log(name: &str, lines: &[Line]) -> String {
    let mut out = format!("---- output of {name} ({} lines) ----\n", lines.len());
    for l in lines {
        out.push_str(&format!(
            "{:>8.3}s{} {}\n",
            l.at.as_secs_f64(),
            if l.console { ' ' } else { '~' },
            l.text
        ));
    }
    out.push_str(&format!("---- end of {name} ----"));
    out
}

/// A running emulator.
pub struct Machine {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    shared: Shared,
    cursor: usize,
    started: Instant,
    /// A process outside the child's process group to kill with it: the file holding its
    /// pid, and a string its command line must contain (so a reused pid is left alone).
    inner: Option<(PathBuf, String)>,
    /// The child's process group, killed if the runner is stopped by a signal.
    _group: Option<crate::reaper::Registration>,
}

impl Machine {
    /// Starts `cmd` in a process group of its own with stdin closed, and collects its
    /// stdout and stderr.
    pub fn spawn(name: &str, kind: Kind, mut cmd: Command) -> Result<Machine, Error> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {name}: {cmd:?}"), e))?;
        let shared: Shared = Arc::default();
        let streams: Vec<Box<dyn Read + Send>> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        lock(&shared).open_streams = streams.len();
        for stream in streams {
            let shared = Arc::clone(&shared);
            thread::spawn(move || collect(stream, kind, started, &shared));
        }
        let _group = crate::reaper::register(child.id());
        Ok(Machine {
            name: name.to_string(),
            child,
            status: None,
            shared,
            cursor: 0,
            started,
            inner: None,
            _group,
        })
    }

    /// Boots a QEMU node.
    /// Unattended runs (tests, bench, `vm run`, `pod run`) are TCG only: KVM is refused
    /// here and stays an opt-in of the interactive `cargo xtask run --accel kvm`.
    pub fn qemu(name: &str, node: &Qemu) -> Result<Machine, Error> {
        if node.accel != crate::emulator::Accel::Tcg {
            return Err(Error::Missing(format!(
                "{name}: unattended QEMU runs use -accel tcg; KVM is only for `cargo xtask run --accel kvm`"
            )));
        }
        crate::setup::ensure_present(crate::setup::QEMU)?;
        if node.net.as_ref().is_some_and(|n| !n.guest_forwards.is_empty()) {
            // Each forwarded guest connection is relayed by `busybox nc`.
            crate::setup::ensure_present(crate::setup::BUSYBOX)?;
        }
        Machine::spawn(name, Kind::Qemu, node.command())
    }

    /// Boots a Bochs node; its files are `target/bochs/NAME.*`.
    pub fn bochs(name: &str, node: &Bochs) -> Result<Machine, Error> {
        crate::setup::ensure_present(crate::setup::BOCHS)?;
        let files = BochsFiles::new(name);
        let cmd = node.command(&files)?;
        let mut m = Machine::spawn(name, Kind::Bochs, cmd)?;
        m.inner = Some((files.pid.clone(), files.rc.display().to_string()));
        Ok(m)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process the run started: the emulator itself under QEMU, the `script` that runs
    /// Bochs under a pseudo-terminal. It leads the run's process group.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since the emulator started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the emulator started (a [`Line`]'s `at` counts from here).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Everything printed so far.
    pub fn lines(&self) -> Vec<Line> {
        lock(&self.shared).lines.clone()
    }

    /// The log so far, formatted for a failure message.
    pub fn log(&self) -> String {
        format_log(&self.name, &self.lines())
    }

    /// The lines printed from index `from` on (a cursor for following the output).
    pub fn lines_from(&self, from: usize) -> Vec<Line> {
        lock(&self.shared).lines.get(from..).map(<[Line]>::to_vec).unwrap_or_default()
    }

    /// The exit status, once the emulator has exited and its output has ended.
    pub fn finished(&mut self) -> Option<ExitStatus> {
        let status = self.poll_exit()?;
        (lock(&self.shared).open_streams == 0).then_some(status)
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the next console line (after the ones earlier waits matched) for which
    /// `pred` holds.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Line, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.poll_exit();
            let shared = Arc::clone(&self.shared);
            let mut c = lock(&shared);
            if let Some(i) = c.lines[self.cursor..].iter().position(|l| l.console && pred(&l.text)) {
                let found = self.cursor + i;
                self.cursor = found + 1;
                return Ok(c.lines[found].clone());
            }
            if let Some(status) = exited {
                if c.open_streams == 0 {
                    return Err(Error::Exited {
                        what: what.to_string(),
                        status,
                        log: format_log(&self.name, &c.lines),
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    after: timeout,
                    log: format_log(&self.name, &c.lines),
                });
            }
            let step = (deadline - now).min(Duration::from_millis(50));
            c = shared.1.wait_timeout(c, step).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            drop(c);
        }
    }

    /// Waits for a console line containing `needle`.
    pub fn wait_for_str(&mut self, needle: &str, timeout: Duration) -> Result<Line, Error> {
        self.wait_for(&format!("a line containing `{needle}`"), timeout, |l| l.contains(needle))
    }

    /// Waits for a console line matching `re`.
    pub fn wait_for_regex(&mut self, re: &Regex, timeout: Duration) -> Result<Line, Error> {
        self.wait_for(&format!("a line matching /{re}/"), timeout, |l| re.is_match(l))
    }

    /// Waits for the emulator to exit and its output to end; on timeout it is killed and
    /// the error carries the log.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<Outcome, Error> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.poll_exit() {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Error::Timeout {
                    what: "the emulator to exit".into(),
                    after: timeout,
                    log: self.log(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.drain(Duration::from_secs(2));
        Ok(Outcome { name: self.name.clone(), status, lines: self.lines() })
    }

    /// Kills the emulator's process group and returns what it printed.
    pub fn stop(mut self) -> Outcome {
        let status = self.kill();
        self.drain(Duration::from_secs(2));
        Outcome { name: self.name.clone(), status, lines: self.lines() }
    }

    /// Waits (up to `limit`) for the output streams to close.
    fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut c = lock(&self.shared);
        while c.open_streams > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            c = self
                .shared
                .1
                .wait_timeout(c, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Kills the process group (the emulator and anything it started) and reaps it.
    fn kill(&mut self) -> ExitStatus {
        self.kill_inner();
        if let Some(status) = self.status {
            return status;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // The group may be gone already; either way the wait below settles it.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => {
                self.status = Some(status);
                status
            }
            // Only possible if the child was reaped elsewhere; report it as killed.
            Err(_) => {
                use std::os::unix::process::ExitStatusExt;
                ExitStatus::from_raw(9)
            }
        }
    }
}

impl Machine {
    /// Kills the process named by `inner` if it still runs what it ran.
    fn kill_inner(&mut self) {
        let Some((file, marker)) = self.inner.take() else { return };
        let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
            return;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker.as_str()));
        if pid > 1 && ours {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&file);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads one stream to its end, line by line.
fn collect(stream: Box<dyn Read + Send>, kind: Kind, started: Instant, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let raw = String::from_utf8_lossy(&buf);
                let text = strip_terminal(raw.trim_end_matches('\n'));
                let console = !(kind == Kind::Bochs && is_bochs_chatter(&text));
                lock(shared).lines.push(Line { at: started.elapsed(), text, console });
                shared.1.notify_all();
            }
        }
    }
    lock(shared).open_streams -= 1;
    shared.1.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Accel;

    #[test]
    fn unattended_runs_refuse_kvm() {
        let node = Qemu { accel: Accel::Kvm, ..Qemu::new("/nonexistent-kernel") };
        let err = Machine::qemu("kvm-check", &node).err().expect("KVM must be refused");
        assert!(err.to_string().contains("-accel tcg"), "{err}");
    }
}
