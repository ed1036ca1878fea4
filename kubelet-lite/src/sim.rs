//! A simulated container runtime. A container whose command is `sh -c 'SCRIPT'` (or a bare
//! `echo`/`sleep`/`exit`/`true`/`false`) runs its script in simulated time: `echo TEXT`
//! writes a log line, `sleep SECONDS` (or `infinity`) waits, `exit CODE` ends it, and the
//! script's status is the last statement's. Any other container prints its command line
//! and exits 0. Nothing is executed on the host.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::image::Reference;
use crate::runtime::{
    ContainerRef, ImageInfo, LogLine, LogView, PullStatus, RegistryAuth, Runtime, RuntimeError, RuntimeState,
};
use crate::time::Time;
use crate::types::{Container, Pod};

/// One statement of a simulated script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Echo(String),
    /// Sleep for this many microseconds (`u64::MAX` = forever).
    Sleep(u64),
    /// Set the status without ending (`true`, `false`, unknown commands).
    Status(i32),
    Exit(i32),
}

/// Splits a statement into words, honouring single and double quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(core::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn seconds_to_micros(s: &str) -> Option<u64> {
    if s == "infinity" || s == "inf" {
        return Some(u64::MAX);
    }
    let s = s.strip_suffix('s').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micros = 0u64;
    for (i, c) in frac.chars().take(6).enumerate() {
        micros += u64::from(c.to_digit(10)?) * 10u64.pow(5 - i as u32);
    }
    Some(int.checked_mul(1_000_000)?.saturating_add(micros))
}

fn statement(argv: &[String]) -> Option<Step> {
    let (cmd, rest) = argv.split_first()?;
    let cmd = cmd.rsplit('/').next().unwrap_or(cmd);
    Some(match cmd {
        "echo" => Step::Echo(rest.join(" ")),
        "sleep" => Step::Sleep(rest.first().and_then(|s| seconds_to_micros(s)).unwrap_or(0)),
        "exit" => Step::Exit(rest.first().and_then(|s| s.parse().ok()).unwrap_or(0)),
        "true" | ":" => Step::Status(0),
        "false" => Step::Status(1),
        _ => Step::Status(127),
    })
}

/// The simulated program for a container's command line.
pub fn program(spec: &Container) -> Vec<Step> {
    let argv: Vec<String> =
        spec.command.iter().flatten().chain(spec.args.iter().flatten()).cloned().collect();
    let base = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("");
    if matches!(base, "sh" | "bash" | "ash") && argv.get(1).map(String::as_str) == Some("-c") {
        let script = argv.get(2).map(String::as_str).unwrap_or("");
        return script
            .split([';', '\n'])
            .flat_map(|s| s.split("&&"))
            .filter_map(|s| statement(&words(s)))
            .collect();
    }
    if matches!(base, "echo" | "sleep" | "exit" | "true" | "false") {
        return statement(&argv).into_iter().collect();
    }
    if argv.is_empty() {
        return Vec::new();
    }
    alloc::vec![Step::Echo(argv.join(" "))]
}

#[derive(Debug)]
struct SimContainer {
    cref: ContainerRef,
    steps: Vec<Step>,
    pc: usize,
    /// The simulated clock of the script: when the next statement runs.
    vt: Time,
    started_at: Time,
    status: i32,
    exit: Option<(i32, Time)>,
    lines: Vec<LogLine>,
}

impl SimContainer {
    fn advance(&mut self, now: Time) {
        while self.exit.is_none() && self.vt <= now {
            let Some(step) = self.steps.get(self.pc).cloned() else {
                self.exit = Some((self.status, self.vt));
                break;
            };
            self.pc += 1;
            match step {
                Step::Echo(t) => {
                    self.lines.push(LogLine { time: self.vt, text: t });
                    self.status = 0;
                }
                Step::Sleep(us) => {
                    self.vt = Time(self.vt.0.saturating_add(us));
                    self.status = 0;
                }
                Step::Status(s) => self.status = s,
                Step::Exit(c) => self.exit = Some((c, self.vt)),
            }
        }
    }
}

/// The simulated runtime.
#[derive(Debug, Default)]
pub struct SimRuntime {
    next_id: u64,
    containers: BTreeMap<String, SimContainer>,
    /// (namespace, pod, container) → the current and the previous instance's id.
    by_name: BTreeMap<(String, String, String), (String, Option<String>)>,
    /// Images whose pull fails (for tests).
    pub failing_images: Vec<String>,
    /// How long a simulated pull takes, in microseconds.
    pub pull_micros: u64,
    /// The images pulled, by normalised reference.
    images: BTreeMap<String, ImageInfo>,
    /// Pulls under way: normalised reference → when they finish.
    pulls: BTreeMap<String, Time>,
    /// How many pulls have started (for tests).
    pub pulls_started: u64,
    /// The pods whose sandbox was stopped, in order (for tests).
    pub sandboxes_stopped: Vec<String>,
    /// Registries that want credentials (for tests): a pull from one of them fails with
    /// `401 unauthorized` unless the pod's credentials for its registry are these.
    pub private_registries: Vec<RegistryAuth>,
}

/// A pulled image's simulated description: its id names the reference, its size is the
/// reference's length.
fn sim_image(reference: &str) -> ImageInfo {
    ImageInfo {
        names: alloc::vec![reference.to_string()],
        id: format!("lite://{reference}"),
        size_bytes: reference.len() as u64,
    }
}

impl SimRuntime {
    /// An empty runtime.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime with one container, `app` of pod `default/p` (uid `u`), running
    /// `sh -c SCRIPT` from `at`: a fixture for what reads a runtime's logs.
    pub fn with_one_container(script: &str, at: Time) -> Self {
        let mut rt = Self::new();
        let c = ContainerRef {
            namespace: "default".into(),
            pod: "p".into(),
            pod_uid: "u".into(),
            container: "app".into(),
        };
        let spec = Container {
            name: "app".into(),
            image: Some("busybox".into()),
            command: Some(["sh", "-c", script].iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        // A script always starts in the simulated runtime.
        let _ = Runtime::start_container(&mut rt, &c, &Pod::default(), &spec, at);
        rt
    }

    /// Advances every container to `now` (so logs are current for readers).
    pub fn advance_all(&mut self, now: Time) {
        for c in self.containers.values_mut() {
            c.advance(now);
        }
    }
}

impl Runtime for SimRuntime {
    fn start_container(
        &mut self,
        c: &ContainerRef,
        _pod: &Pod,
        spec: &Container,
        now: Time,
    ) -> Result<String, RuntimeError> {
        let image = spec.image.clone().unwrap_or_default();
        if image.is_empty() || self.failing_images.contains(&image) {
            return Err(RuntimeError::ImagePull(format!("image {image:?} not found")));
        }
        self.next_id += 1;
        let id = format!("{:016x}", self.next_id);
        let key = (c.namespace.clone(), c.pod.clone(), c.container.clone());
        let prev = self.by_name.remove(&key).map(|(cur, old)| {
            if let Some(o) = old {
                self.containers.remove(&o);
            }
            cur
        });
        self.by_name.insert(key, (id.clone(), prev));
        let mut sc = SimContainer {
            cref: c.clone(),
            steps: program(spec),
            pc: 0,
            vt: now,
            started_at: now,
            status: 0,
            exit: None,
            lines: Vec::new(),
        };
        sc.advance(now);
        self.containers.insert(id.clone(), sc);
        Ok(id)
    }

    fn stop_container(&mut self, id: &str, _grace_secs: u64, now: Time) {
        if let Some(c) = self.containers.get_mut(id) {
            c.advance(now);
            if c.exit.is_none() {
                // Killed by SIGKILL: 128 + 9.
                c.exit = Some((137, now));
            }
        }
    }

    fn poll(&mut self, id: &str, now: Time) -> Option<RuntimeState> {
        let c = self.containers.get_mut(id)?;
        c.advance(now);
        Some(match c.exit {
            None => RuntimeState::Running { started_at: c.started_at },
            Some((code, at)) => RuntimeState::exited(code, c.started_at, at),
        })
    }

    fn remove_pod(&mut self, pod_uid: &str) {
        self.containers.retain(|_, c| c.cref.pod_uid != pod_uid);
        let containers = &self.containers;
        self.by_name.retain(|_, (cur, _)| containers.contains_key(cur));
    }

    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<LogView> {
        let (cur, prev) =
            self.by_name.get(&(namespace.to_string(), pod.to_string(), container.to_string()))?;
        let id = if previous { prev.as_ref()? } else { cur };
        let c = self.containers.get(id)?;
        Some(LogView { lines: c.lines.clone(), first: 0, instance: 0, running: c.exit.is_none() })
    }

    fn image_status(&self, image: &str) -> Option<ImageInfo> {
        self.images.get(&Reference::parse(image).ok()?.to_string()).cloned()
    }

    /// Every pull succeeds after [`SimRuntime::pull_micros`], but those of
    /// [`SimRuntime::failing_images`], of references that do not parse and, without the right
    /// credentials among `auth`, from [`SimRuntime::private_registries`].
    fn pull_image(&mut self, image: &str, auth: &[RegistryAuth], now: Time) -> PullStatus {
        let (reference, registry) = match Reference::parse(image) {
            Ok(r) => (r.to_string(), r.registry),
            Err(e) => return PullStatus::Failed(format!("{e}")),
        };
        let done_at = *self.pulls.entry(reference.clone()).or_insert_with(|| {
            self.pulls_started += 1;
            Time(now.0.saturating_add(self.pull_micros))
        });
        if now < done_at {
            return PullStatus::Pulling;
        }
        self.pulls.remove(&reference);
        if self.failing_images.iter().any(|f| f == image || *f == reference) {
            return PullStatus::Failed(format!("{reference}: not found"));
        }
        if let Some(wanted) = self.private_registries.iter().find(|p| p.registry == registry) {
            if auth.iter().find(|a| a.registry == registry) != Some(wanted) {
                return PullStatus::Failed(format!("{reference}: 401 unauthorized"));
            }
        }
        let info = sim_image(&reference);
        self.images.insert(reference, info.clone());
        PullStatus::Pulled(info)
    }

    fn list_images(&self) -> Vec<ImageInfo> {
        self.images.values().cloned().collect()
    }

    fn stop_pod_sandbox(&mut self, pod_uid: &str) {
        self.sandboxes_stopped.push(pod_uid.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn spec(cmd: &[&str]) -> Container {
        Container {
            name: "app".into(),
            image: Some("busybox".into()),
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }
    fn cref() -> ContainerRef {
        ContainerRef {
            namespace: "default".into(),
            pod: "p".into(),
            pod_uid: "u1".into(),
            container: "app".into(),
        }
    }

    #[test]
    fn parses_scripts() {
        let p = program(&spec(&["sh", "-c", "echo 'hello world'; sleep 2.5; exit 3"]));
        assert_eq!(p, vec![Step::Echo("hello world".into()), Step::Sleep(2_500_000), Step::Exit(3)]);
        assert_eq!(program(&spec(&["sleep", "infinity"])), vec![Step::Sleep(u64::MAX)]);
        assert_eq!(
            program(&spec(&["/app/server", "--port", "80"])),
            vec![Step::Echo("/app/server --port 80".into())]
        );
    }

    #[test]
    fn runs_in_simulated_time() {
        let mut rt = SimRuntime::new();
        let t0 = Time::from_secs(1000);
        let id = rt
            .start_container(
                &cref(),
                &Pod::default(),
                &spec(&["sh", "-c", "echo a; sleep 5; echo b; exit 2"]),
                t0,
            )
            .unwrap();
        assert_eq!(rt.poll(&id, t0.plus_secs(4)), Some(RuntimeState::Running { started_at: t0 }));
        assert_eq!(rt.logs("default", "p", "app", false).unwrap().lines.len(), 1);
        let done = rt.poll(&id, t0.plus_secs(6));
        assert_eq!(done, Some(RuntimeState::exited(2, t0, t0.plus_secs(5))));
        let log = rt.logs("default", "p", "app", false).unwrap();
        assert_eq!(log.lines[1], LogLine { time: t0.plus_secs(5), text: "b".into() });
        assert!(!log.running);
        // Restart: the old instance becomes "previous".
        let id2 = rt
            .start_container(&cref(), &Pod::default(), &spec(&["sh", "-c", "false"]), t0.plus_secs(7))
            .unwrap();
        assert_eq!(
            rt.poll(&id2, t0.plus_secs(7)).map(|s| matches!(s, RuntimeState::Exited { code: 1, .. })),
            Some(true)
        );
        assert_eq!(rt.logs("default", "p", "app", true).unwrap().lines.len(), 2);
        rt.remove_pod("u1");
        assert!(rt.logs("default", "p", "app", false).is_none());
    }

    #[test]
    fn stop_kills_and_bad_image_fails() {
        let mut rt = SimRuntime::new();
        let t0 = Time::from_secs(10);
        let id = rt.start_container(&cref(), &Pod::default(), &spec(&["sleep", "infinity"]), t0).unwrap();
        rt.stop_container(&id, 30, t0.plus_secs(1));
        assert!(matches!(rt.poll(&id, t0.plus_secs(2)), Some(RuntimeState::Exited { code: 137, .. })));
        let mut bad = spec(&["true"]);
        bad.image = None;
        assert!(matches!(
            rt.start_container(&cref(), &Pod::default(), &bad, t0),
            Err(RuntimeError::ImagePull(_))
        ));
    }
}
