//! Pod workers: run one pod's containers against a [`Runtime`] and compute its status the
//! way the kubelet does (container states, restart policy with CrashLoopBackOff,
//! activeDeadlineSeconds, graceful termination, kubelet-owned conditions).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::image::PullPolicy;
use crate::runtime::{
    ContainerRef, ImageInfo, PullStatus, RegistryAuth, Runtime, RuntimeError, RuntimeState,
};
use crate::time::Time;
use crate::types::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIp, PodStatus,
};
use wire::quantity;

/// First CrashLoopBackOff delay, in seconds; it doubles per restart.
pub const BACKOFF_INITIAL_SECS: u64 = 10;
/// Largest CrashLoopBackOff delay, in seconds.
pub const BACKOFF_MAX_SECS: u64 = 300;
/// How long a failed pull stays `ErrImagePull` (its message saying why) before the
/// container shows `ImagePullBackOff`: as long as the kubelet waits before it syncs a pod
/// whose sync failed again, so the failure reaches the API server and those who watch it.
pub const PULL_ERROR_SHOWN_SECS: u64 = 10;

/// The delay after the `failures`-th failure in a row: 10 s doubling to 300 s (the
/// kubelet's back-off for restarts and for image pulls alike).
fn backoff_secs(failures: u32) -> u64 {
    BACKOFF_INITIAL_SECS.saturating_mul(1u64 << failures.saturating_sub(1).min(31)).min(BACKOFF_MAX_SECS)
}

/// `1.234s`, as the kubelet writes a pull's duration.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// An event a pod worker wants recorded against its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
    /// e.g. `spec.containers{app}`.
    pub field_path: Option<String>,
}

fn ev(type_: &'static str, reason: &str, message: String, container: Option<&str>) -> PodEvent {
    PodEvent {
        type_,
        reason: reason.to_string(),
        message,
        field_path: container.map(|c| format!("spec.containers{{{c}}}")),
    }
}

/// Resource requests of a pod (requests default to limits, as the API server defaults them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Sums the container requests of a pod. Malformed quantities count as zero (the API
/// server validates them; this must not fail on what it lets through).
pub fn pod_requests(pod: &Pod) -> PodRequests {
    let mut r = PodRequests::default();
    for c in &pod.spec.containers {
        let res = c.resources.as_ref();
        let get = |name: &str| {
            res.and_then(|x| x.requests.as_ref().and_then(|m| m.get(name)))
                .or_else(|| res.and_then(|x| x.limits.as_ref().and_then(|m| m.get(name))))
        };
        if let Some(q) = get("cpu") {
            r.cpu_millis = r.cpu_millis.saturating_add(quantity::cpu_millis(q).unwrap_or(0));
        }
        if let Some(q) = get("memory") {
            r.memory_bytes = r.memory_bytes.saturating_add(quantity::bytes(q).unwrap_or(0));
        }
    }
    r
}

/// The pod's QoS class by the Kubernetes rules.
pub fn qos_class(pod: &Pod) -> &'static str {
    let mut any = false;
    let mut guaranteed = !pod.spec.containers.is_empty();
    for c in &pod.spec.containers {
        let res = c.resources.clone().unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for r in ["cpu", "memory"] {
            match (limits.get(r), requests.get(r)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    code: i32,
    started: Time,
    finished: Time,
    id: String,
    reason: Option<String>,
    message: Option<String>,
}

/// The containerID the API shows: the runtime's id when it names its scheme
/// (`crx://...`), else `lite://` and the id.
fn container_id(id: &str) -> String {
    if id.contains("://") {
        id.to_string()
    } else {
        format!("lite://{id}")
    }
}

impl Term {
    fn to_api(&self) -> ContainerStateTerminated {
        let usual = if self.code == 0 { "Completed" } else { "Error" };
        ContainerStateTerminated {
            exit_code: self.code,
            reason: Some(self.reason.clone().unwrap_or_else(|| usual.into())),
            message: self.message.clone(),
            started_at: Some(self.started.rfc3339()),
            finished_at: Some(self.finished.rfc3339()),
            container_id: Some(container_id(&self.id)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CState {
    Waiting { reason: String, message: Option<String> },
    Running { started: Time },
    Terminated(Term),
}

#[derive(Clone, Debug)]
struct Ctr {
    spec: Container,
    id: Option<String>,
    restarts: i32,
    state: CState,
    last: Option<Term>,
    next_start: Time,
    start_failures: u32,
    /// The image last made ready for it (its imageID in the status).
    image: Option<ImageInfo>,
    /// True when the image is ready for the next start (by the pull policy).
    image_ready: bool,
    /// A pull under way, started then.
    pulling: Option<Time>,
    /// Failed pulls in a row, when the last one failed, and the earliest time of the next.
    pull_failures: u32,
    pull_failed: Time,
    next_pull: Time,
}

fn is_waiting(state: &CState, why: &str) -> bool {
    matches!(state, CState::Waiting { reason, .. } if reason == why)
}

/// A pod's registry credentials as its image pulls see them.
struct Credentials<'a> {
    /// From the pod's imagePullSecrets.
    auth: &'a [RegistryAuth],
    /// Whether they were fetched for the pulls starting now (always, for a pod without
    /// imagePullSecrets).
    fresh: bool,
    /// A pull started with them.
    used: bool,
    /// A pull waits for them to be fetched again.
    wanted: bool,
}

/// Makes sure the node has the container's image for its next start, by its pull policy.
/// True when it has; otherwise the container waits (ContainerCreating while a pull runs or
/// waits for the pod's credentials; ErrImagePull for [`PULL_ERROR_SHOWN_SECS`], then
/// ImagePullBackOff until the back-off has passed; ErrImageNeverPull) and the worker asks
/// again at its next sync.
fn ensure_image(
    c: &mut Ctr,
    creds: &mut Credentials<'_>,
    rt: &mut dyn Runtime,
    now: Time,
    events: &mut Vec<PodEvent>,
) -> bool {
    let image = c.spec.image.clone().unwrap_or_default();
    let name = c.spec.name.clone();
    let waiting =
        |reason: &str, message: String| CState::Waiting { reason: reason.into(), message: Some(message) };
    if c.pulling.is_none() {
        if now < c.next_pull {
            let fresh =
                is_waiting(&c.state, "ErrImagePull") && now < c.pull_failed.plus_secs(PULL_ERROR_SHOWN_SECS);
            if !fresh && !is_waiting(&c.state, "ImagePullBackOff") {
                let msg = format!("Back-off pulling image \"{image}\"");
                events.push(ev("Normal", "BackOff", msg.clone(), Some(&name)));
                events.push(ev("Warning", "Failed", "Error: ImagePullBackOff".into(), Some(&name)));
                c.state = waiting("ImagePullBackOff", msg);
            }
            return false;
        }
        let policy = PullPolicy::of(c.spec.image_pull_policy.as_deref(), &image);
        match (policy, rt.image_status(&image)) {
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(info)) => {
                let msg = format!("Container image \"{image}\" already present on machine");
                events.push(ev("Normal", "Pulled", msg, Some(&name)));
                c.image = Some(info);
                return true;
            }
            (PullPolicy::Never, None) => {
                if !is_waiting(&c.state, "ErrImageNeverPull") {
                    let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                    events.push(ev("Warning", "ErrImageNeverPull", msg.clone(), Some(&name)));
                    events.push(ev("Warning", "Failed", "Error: ErrImageNeverPull".into(), Some(&name)));
                    c.state = waiting("ErrImageNeverPull", msg);
                }
                return false;
            }
            _ if !creds.fresh => {
                // The kubelet reads the pod's pull secrets before each pull.
                creds.wanted = true;
                return false;
            }
            _ => {
                events.push(ev("Normal", "Pulling", format!("Pulling image \"{image}\""), Some(&name)));
                c.pulling = Some(now);
                creds.used = true;
            }
        }
    }
    let since = c.pulling.unwrap_or(now);
    match rt.pull_image(&image, creds.auth, now) {
        PullStatus::Pulling => {
            c.state = waiting("ContainerCreating", format!("Pulling image \"{image}\""));
            false
        }
        PullStatus::Pulled(info) => {
            let took = seconds(now.millis_since(since));
            events.push(ev(
                "Normal",
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {} bytes.",
                    info.size_bytes
                ),
                Some(&name),
            ));
            c.pulling = None;
            c.pull_failures = 0;
            c.image = Some(info);
            true
        }
        PullStatus::Failed(why) => {
            let msg = format!("failed to pull image \"{image}\": {why}");
            events.push(ev(
                "Warning",
                "Failed",
                format!("Failed to pull image \"{image}\": {why}"),
                Some(&name),
            ));
            events.push(ev("Warning", "Failed", "Error: ErrImagePull".into(), Some(&name)));
            c.pulling = None;
            c.pull_failures = c.pull_failures.saturating_add(1);
            c.pull_failed = now;
            c.next_pull = now.plus_secs(backoff_secs(c.pull_failures));
            c.state = waiting("ErrImagePull", msg);
            false
        }
    }
}

/// The names in a pod's `imagePullSecrets`, each once, in order, without empty ones.
fn pull_secret_names(pod: &Pod) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in pod.spec.image_pull_secrets.iter().flatten() {
        if !r.name.is_empty() && !out.contains(&r.name) {
            out.push(r.name.clone());
        }
    }
    out
}

/// Runs one pod.
#[derive(Debug)]
pub struct PodWorker {
    /// The latest Pod object from the API server.
    pub pod: Pod,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    rejected: Option<(String, String)>,
    start_time: Option<Time>,
    ctrs: Vec<Ctr>,
    forced: Option<(&'static str, Option<String>, Option<String>)>,
    killing: bool,
    conds: BTreeMap<&'static str, (bool, Time)>,
    host_ip: String,
    pod_ip: String,
    /// Registry credentials from the pod's imagePullSecrets.
    pub auth: Vec<RegistryAuth>,
    sandbox_stopped: bool,
    /// Whether `auth` was fetched for the next pulls to start: true from the start for a pod
    /// without imagePullSecrets; else set by [`PodWorker::set_pull_secrets`] and used up by
    /// the pulls that start after it.
    auth_fresh: bool,
    /// A pull waits for the pod's pull secrets to be fetched.
    auth_wanted: bool,
    /// The pod names imagePullSecrets (a pod's spec keeps them for its life).
    has_pull_secrets: bool,
}

impl PodWorker {
    /// A worker for `pod`, admitted (`rejected == None`) or rejected with (reason, message).
    pub fn new(
        pod: Pod,
        host_ip: String,
        pod_ip: String,
        rejected: Option<(String, String)>,
        now: Time,
    ) -> Self {
        let ctrs = pod
            .spec
            .containers
            .iter()
            .map(|c| Ctr {
                spec: c.clone(),
                id: None,
                restarts: 0,
                state: CState::Waiting { reason: "ContainerCreating".into(), message: None },
                last: None,
                next_start: now,
                start_failures: 0,
                image: None,
                image_ready: false,
                pulling: None,
                pull_failures: 0,
                pull_failed: now,
                next_pull: now,
            })
            .collect();
        let has_pull_secrets = !pull_secret_names(&pod).is_empty();
        PodWorker {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            pod,
            start_time: (rejected.is_none()).then_some(now),
            rejected,
            ctrs,
            forced: None,
            killing: false,
            conds: BTreeMap::new(),
            host_ip,
            pod_ip,
            auth: Vec::new(),
            sandbox_stopped: false,
            auth_fresh: !has_pull_secrets,
            auth_wanted: false,
            has_pull_secrets,
        }
    }

    /// The names in the pod's `imagePullSecrets`, each once, in order (empty names are
    /// skipped, as the kubelet skips them).
    pub fn pull_secret_names(&self) -> Vec<String> {
        pull_secret_names(&self.pod)
    }

    /// True while a pull waits for the pod's pull secrets: the host fetches them and hands
    /// the credentials to [`PodWorker::set_pull_secrets`].
    pub fn wants_pull_secrets(&self) -> bool {
        self.auth_wanted
    }

    /// The credentials read from the pod's pull secrets (those that could be fetched), for
    /// the pulls that start next.
    pub fn set_pull_secrets(&mut self, auth: Vec<RegistryAuth>) {
        self.auth = auth;
        self.auth_fresh = true;
        self.auth_wanted = false;
    }

    /// True if the pod was rejected at admission.
    pub fn is_rejected(&self) -> bool {
        self.rejected.is_some()
    }

    fn policy(&self) -> &str {
        self.pod.spec.restart_policy.as_deref().unwrap_or("Always")
    }

    fn cref(&self, c: &str) -> ContainerRef {
        ContainerRef {
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            pod_uid: self.uid.clone(),
            container: c.to_string(),
        }
    }

    fn pod_desc(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }

    /// True while the pod is being deleted.
    pub fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// True once no container runs and none will be started again.
    pub fn is_finished(&self) -> bool {
        let phase = self.phase().0;
        (phase == "Succeeded" || phase == "Failed")
            && self.ctrs.iter().all(|c| !matches!(c.state, CState::Running { .. }))
    }

    /// The grace period of a stop: the deletion's, else the pod's, else 30 s.
    fn grace_secs(&self) -> u64 {
        let m = &self.pod.metadata;
        let g =
            m.deletion_grace_period_seconds.or(self.pod.spec.termination_grace_period_seconds).unwrap_or(30);
        u64::try_from(g).unwrap_or(0)
    }

    fn kill_all(&mut self, rt: &mut dyn Runtime, now: Time, events: &mut Vec<PodEvent>) {
        let grace = self.grace_secs();
        for c in &mut self.ctrs {
            if let (Some(id), CState::Running { .. }) = (&c.id, &c.state) {
                events.push(ev(
                    "Normal",
                    "Killing",
                    format!("Stopping container {}", c.spec.name),
                    Some(&c.spec.name),
                ));
                rt.stop_container(id, grace, now);
            }
        }
    }

    /// Stops every container (the pod disappeared from the API server).
    pub fn stop(&mut self, rt: &mut dyn Runtime, now: Time, events: &mut Vec<PodEvent>) {
        self.kill_all(rt, now, events);
        rt.remove_pod(&self.uid);
    }

    /// Advances the pod at `now`: starts, restarts, kills containers, appends events.
    pub fn sync(&mut self, rt: &mut dyn Runtime, now: Time, events: &mut Vec<PodEvent>) {
        if self.rejected.is_some() {
            return;
        }
        if self.deleting() && !self.killing {
            self.killing = true;
            self.kill_all(rt, now, events);
        }
        if let (Some(ads), Some(start), None) =
            (self.pod.spec.active_deadline_seconds, self.start_time, &self.forced)
        {
            if now >= start.plus_secs(u64::try_from(ads).unwrap_or(0)) {
                let msg = String::from("Pod was active on the node longer than the specified deadline");
                events.push(ev("Normal", "DeadlineExceeded", msg.clone(), None));
                self.forced = Some(("Failed", Some("DeadlineExceeded".into()), Some(msg)));
                self.killing = true;
                self.kill_all(rt, now, events);
            }
        }
        let policy = self.policy().to_string();
        let stop_all = self.killing;
        let desc = self.pod_desc();
        let mut creds = Credentials { auth: &self.auth, fresh: self.auth_fresh, used: false, wanted: false };
        for i in 0..self.ctrs.len() {
            let cref = self.cref(&self.ctrs[i].spec.name);
            let c = &mut self.ctrs[i];
            if let Some(id) = c.id.clone() {
                match rt.poll(&id, now) {
                    Some(RuntimeState::Running { started_at }) => {
                        c.state = CState::Running { started: started_at }
                    }
                    Some(RuntimeState::Exited { code, started_at, finished_at, reason, message }) => {
                        let term = Term {
                            code,
                            started: started_at,
                            finished: finished_at,
                            id: id.clone(),
                            reason,
                            message,
                        };
                        let restart = !stop_all
                            && match policy.as_str() {
                                "Never" => false,
                                "OnFailure" => code != 0,
                                _ => true,
                            };
                        c.id = None;
                        if restart {
                            let delay = if c.restarts == 0 {
                                0
                            } else {
                                let shift = u32::try_from(c.restarts - 1).unwrap_or(31).min(31);
                                BACKOFF_INITIAL_SECS.saturating_mul(1u64 << shift).min(BACKOFF_MAX_SECS)
                            };
                            c.next_start = finished_at.plus_secs(delay);
                            c.state = CState::Terminated(term.clone());
                            c.last = Some(term);
                        } else {
                            c.state = CState::Terminated(term);
                            c.next_start = Time(u64::MAX);
                        }
                    }
                    None => {
                        c.id = None;
                        c.state = CState::Waiting { reason: "ContainerCreating".into(), message: None };
                    }
                }
            }
            if c.id.is_some() || stop_all || c.next_start == Time(u64::MAX) {
                continue;
            }
            if now < c.next_start {
                if c.last.is_some()
                    && !matches!(&c.state, CState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
                {
                    let secs =
                        c.next_start.millis_since(c.last.as_ref().map(|t| t.finished).unwrap_or(now)) / 1000;
                    c.state = CState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {secs}s restarting failed container={} pod={desc}",
                            c.spec.name
                        )),
                    };
                    events.push(ev(
                        "Warning",
                        "BackOff",
                        format!("Back-off restarting failed container {} in pod {desc}", c.spec.name),
                        Some(&c.spec.name),
                    ));
                }
                continue;
            }
            if !c.image_ready {
                if !ensure_image(c, &mut creds, rt, now, events) {
                    continue;
                }
                c.image_ready = true;
            }
            let name = c.spec.name.clone();
            match rt.start_container(&cref, &self.pod, &c.spec, now) {
                Ok(id) => {
                    // The next start checks the image again, as the pull policy says.
                    c.image_ready = false;
                    events.push(ev("Normal", "Created", format!("Created container: {name}"), Some(&name)));
                    events.push(ev("Normal", "Started", format!("Started container {name}"), Some(&name)));
                    if c.last.is_some() {
                        c.restarts = c.restarts.saturating_add(1);
                    }
                    c.start_failures = 0;
                    c.id = Some(id);
                    c.state = CState::Running { started: now };
                }
                Err(e) => {
                    let reason = match e {
                        RuntimeError::ImagePull(_) => {
                            c.image_ready = false;
                            "ErrImagePull"
                        }
                        RuntimeError::Start(_) => "RunContainerError",
                    };
                    events.push(ev("Warning", "Failed", format!("{e}"), Some(&name)));
                    events.push(ev("Warning", "Failed", format!("Error: {reason}"), Some(&name)));
                    c.start_failures = c.start_failures.saturating_add(1);
                    c.next_start = now.plus_secs(backoff_secs(c.start_failures));
                    c.state = CState::Waiting { reason: reason.into(), message: Some(format!("{e}")) };
                }
            }
        }
        let (used, wanted) = (creds.used, creds.wanted);
        if used && self.has_pull_secrets {
            self.auth_fresh = false;
        }
        self.auth_wanted |= wanted && !self.auth_fresh;
        self.update_conditions(now);
        // A pod that is done gives back what its sandbox holds (its containers' states and
        // logs stay), as the kubelet stops a terminated pod's sandbox.
        if !self.sandbox_stopped && self.is_finished() {
            self.sandbox_stopped = true;
            rt.stop_pod_sandbox(&self.uid);
        }
    }

    /// (phase, reason, message) by the kubelet's rules.
    fn phase(&self) -> (&'static str, Option<String>, Option<String>) {
        if let Some((r, m)) = &self.rejected {
            return ("Failed", Some(r.clone()), Some(m.clone()));
        }
        let all_stopped = self
            .ctrs
            .iter()
            .all(|c| matches!(c.state, CState::Terminated(_)) || c.id.is_none() && c.last.is_some());
        let all_ok = self.ctrs.iter().all(|c| matches!(&c.state, CState::Terminated(t) if t.code == 0));
        let running = self.ctrs.iter().any(|c| matches!(c.state, CState::Running { .. }));
        if let Some((p, r, m)) = &self.forced {
            if !running {
                return (p, r.clone(), m.clone());
            }
            return ("Running", None, None);
        }
        if self.killing && !running {
            return (if all_ok { "Succeeded" } else { "Failed" }, None, None);
        }
        let never_ran = self
            .ctrs
            .iter()
            .any(|c| c.id.is_none() && c.last.is_none() && !matches!(c.state, CState::Terminated(_)));
        if never_ran {
            return ("Pending", None, None);
        }
        if running || !all_stopped {
            return ("Running", None, None);
        }
        match self.policy() {
            "Never" => (if all_ok { "Succeeded" } else { "Failed" }, None, None),
            "OnFailure" if all_ok => ("Succeeded", None, None),
            _ => ("Running", None, None),
        }
    }

    fn update_conditions(&mut self, now: Time) {
        let phase = self.phase().0;
        let terminal = phase == "Succeeded" || phase == "Failed";
        let all_running =
            !self.ctrs.is_empty() && self.ctrs.iter().all(|c| matches!(c.state, CState::Running { .. }));
        let ready = all_running && !terminal && !self.killing;
        for (name, val) in [
            ("PodReadyToStartContainers", !terminal || !self.killing),
            ("Initialized", true),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", true),
        ] {
            let entry = self.conds.entry(name).or_insert((val, now));
            if entry.0 != val {
                *entry = (val, now);
            }
        }
    }

    /// The pod's status as the kubelet reports it.
    pub fn status(&self) -> PodStatus {
        let (phase, reason, message) = self.phase();
        let qos = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap_or_else(|| qos_class(&self.pod).into());
        if self.rejected.is_some() {
            return PodStatus {
                phase: Some(phase.into()),
                reason,
                message,
                qos_class: Some(qos),
                ..Default::default()
            };
        }
        let conditions =
            [("PodReadyToStartContainers"), "Initialized", "Ready", "ContainersReady", "PodScheduled"]
                .iter()
                .filter_map(|n| {
                    self.conds.get(n).map(|(v, t)| PodCondition {
                        type_: (*n).into(),
                        status: if *v { "True" } else { "False" }.into(),
                        last_transition_time: Some(t.rfc3339()),
                        reason: (!*v && (*n == "Ready" || *n == "ContainersReady")).then(|| {
                            if phase == "Succeeded" || phase == "Failed" {
                                "PodCompleted"
                            } else {
                                "ContainersNotReady"
                            }
                            .into()
                        }),
                        message: None,
                    })
                })
                .collect();
        let container_statuses = self
            .ctrs
            .iter()
            .map(|c| {
                let state = match &c.state {
                    CState::Waiting { reason, message } => ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.clone()),
                            message: message.clone(),
                        }),
                        ..Default::default()
                    },
                    CState::Running { started } => ContainerState {
                        running: Some(ContainerStateRunning { started_at: Some(started.rfc3339()) }),
                        ..Default::default()
                    },
                    CState::Terminated(t) => {
                        ContainerState { terminated: Some(t.to_api()), ..Default::default() }
                    }
                };
                let last_state = match (&c.last, &c.state) {
                    (Some(t), CState::Terminated(cur)) if cur == t => ContainerState::default(),
                    (Some(t), _) => ContainerState { terminated: Some(t.to_api()), ..Default::default() },
                    (None, _) => ContainerState::default(),
                };
                let running = matches!(c.state, CState::Running { .. });
                let image = c.spec.image.clone().unwrap_or_default();
                ContainerStatus {
                    name: c.spec.name.clone(),
                    image_id: c.image.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
                    image,
                    container_id: c
                        .id
                        .as_ref()
                        .or(match &c.state {
                            CState::Terminated(t) => Some(&t.id),
                            _ => None,
                        })
                        .map(|id| container_id(id)),
                    ready: running && !self.killing,
                    started: Some(running),
                    restart_count: c.restarts,
                    state,
                    last_state,
                }
            })
            .collect();
        PodStatus {
            phase: Some(phase.into()),
            reason,
            message,
            conditions,
            host_ip: Some(self.host_ip.clone()),
            host_ips: alloc::vec![PodIp { ip: self.host_ip.clone() }],
            pod_ip: Some(self.pod_ip.clone()),
            pod_ips: alloc::vec![PodIp { ip: self.pod_ip.clone() }],
            start_time: self.start_time.map(Time::rfc3339),
            qos_class: Some(qos),
            container_statuses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimRuntime;
    use crate::types::{ObjectMeta, PodSpec, ResourceRequirements};

    fn pod(policy: &str, script: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: PodSpec {
                containers: alloc::vec![Container {
                    name: "app".into(),
                    image: Some("busybox:1.36".into()),
                    command: Some(alloc::vec!["sh".into(), "-c".into(), script.into()]),
                    ..Default::default()
                }],
                restart_policy: Some(policy.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn worker(p: Pod, now: Time) -> PodWorker {
        PodWorker::new(p, "10.0.0.2".into(), "10.88.0.5".into(), None, now)
    }

    fn cstate(w: &PodWorker) -> ContainerState {
        w.status().container_statuses[0].state.clone()
    }

    #[test]
    fn never_policy_completes_and_fails() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Never", "echo hi; sleep 3; exit 0"), t0);
        w.sync(&mut rt, t0, &mut ev);
        let reasons: Vec<_> = ev.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
        let s = w.status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        w.sync(&mut rt, t0.plus_secs(4), &mut ev);
        let s = w.status();
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let term = s.container_statuses[0].state.terminated.clone().unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
        assert!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"));
        assert!(w.is_finished());
        assert!(rt.sandboxes_stopped.is_empty() || rt.sandboxes_stopped == ["uid-1"]);
        w.sync(&mut rt, t0.plus_secs(5), &mut ev);
        assert_eq!(rt.sandboxes_stopped, ["uid-1"], "a finished pod's sandbox is stopped once");

        let mut w = worker(pod("Never", "exit 3"), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        let s = w.status();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let term = s.container_statuses[0].state.terminated.clone().unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    }

    #[test]
    fn always_policy_crash_loops_with_doubling_backoff() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Always", "exit 1"), t0);
        // Start, exit, immediate first restart.
        let mut starts = Vec::new();
        for s in 0..1200u64 {
            let now = t0.plus_secs(s);
            let before = ev.iter().filter(|e| e.reason == "Started").count();
            w.sync(&mut rt, now, &mut ev);
            if ev.iter().filter(|e| e.reason == "Started").count() > before {
                starts.push(s);
            }
        }
        // Restart gaps: 0 (first), then 10, 20, 40, 80, 160, 300, 300...
        let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..8], &[1, 10, 20, 40, 80, 160, 300, 300]);
        let s = w.status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(ev.iter().any(|e| e.reason == "BackOff" && e.type_ == "Warning"));
        // Between restarts the container waits in CrashLoopBackOff with the last termination kept.
        let mut w = worker(pod("Always", "exit 1"), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(1), &mut ev); // exits, restarts at once
        w.sync(&mut rt, t0.plus_secs(2), &mut ev); // exits again, back-off 10 s
        let st = &w.status().container_statuses[0];
        assert_eq!(st.state.waiting.as_ref().and_then(|x| x.reason.as_deref()), Some("CrashLoopBackOff"));
        assert_eq!(st.restart_count, 1);
        assert_eq!(st.last_state.terminated.as_ref().map(|t| t.exit_code), Some(1));
    }

    #[test]
    fn on_failure_restarts_only_failures() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("OnFailure", "sleep 1; exit 0"), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(2), &mut ev);
        assert_eq!(w.status().phase.as_deref(), Some("Succeeded"));
        let mut w = worker(pod("OnFailure", "exit 2"), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        assert_eq!(w.status().phase.as_deref(), Some("Running"));
        assert!(cstate(&w).running.is_some(), "restarted");
    }

    #[test]
    fn active_deadline_fails_the_pod() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut p = pod("Always", "sleep infinity");
        p.spec.active_deadline_seconds = Some(5);
        let mut w = worker(p, t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(4), &mut ev);
        assert_eq!(w.status().phase.as_deref(), Some("Running"));
        w.sync(&mut rt, t0.plus_secs(5), &mut ev);
        w.sync(&mut rt, t0.plus_secs(6), &mut ev);
        let s = w.status();
        assert_eq!((s.phase.as_deref(), s.reason.as_deref()), (Some("Failed"), Some("DeadlineExceeded")));
        assert!(ev.iter().any(|e| e.reason == "Killing"));
        assert!(w.is_finished());
    }

    #[test]
    fn deletion_kills_and_terminates() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Always", "sleep infinity"), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.pod.metadata.deletion_timestamp = Some(t0.plus_secs(30).rfc3339());
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        w.sync(&mut rt, t0.plus_secs(2), &mut ev);
        let s = w.status();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.container_statuses[0].state.terminated.as_ref().map(|t| t.exit_code), Some(137));
        assert!(ev.iter().any(|e| e.reason == "Killing" && e.message == "Stopping container app"));
        assert!(w.is_finished());
    }

    #[test]
    fn image_pull_failure_waits_with_reason() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        rt.failing_images.push("busybox:1.36".into());
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Always", "true"), t0);
        w.sync(&mut rt, t0, &mut ev);
        assert_eq!(cstate(&w).waiting.and_then(|x| x.reason), Some("ErrImagePull".into()));
        assert_eq!(w.status().phase.as_deref(), Some("Pending"));
        assert!(ev.iter().any(|e| e.reason == "Failed" && e.type_ == "Warning"));
    }

    fn waiting(w: &PodWorker) -> (Option<String>, Option<String>) {
        let st = cstate(w).waiting.unwrap_or_default();
        (st.reason, st.message)
    }

    #[test]
    fn a_pull_in_progress_is_reported_then_the_container_starts() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        rt.pull_micros = 2_500_000;
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Always", "sleep infinity"), t0);
        w.sync(&mut rt, t0, &mut ev);
        assert_eq!(
            waiting(&w),
            (Some("ContainerCreating".into()), Some("Pulling image \"busybox:1.36\"".into()))
        );
        assert_eq!(w.status().phase.as_deref(), Some("Pending"));
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        assert_eq!(rt.pulls_started, 1, "one pull, not one per sync");
        w.sync(&mut rt, t0.plus_secs(3), &mut ev);
        assert!(cstate(&w).running.is_some());
        let reasons: Vec<_> = ev.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
        assert_eq!(
            ev[1].message,
            "Successfully pulled image \"busybox:1.36\" in 3.000s (3.000s including waiting). Image size: 30 bytes."
        );
        let st = &w.status().container_statuses[0];
        assert_eq!(st.image_id, "lite://docker.io/library/busybox:1.36");
    }

    #[test]
    fn a_failed_pull_backs_off_and_is_retried() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        rt.failing_images.push("busybox:1.36".into());
        let mut ev: Vec<PodEvent> = Vec::new();
        let mut w = worker(pod("Always", "sleep infinity"), t0);
        w.sync(&mut rt, t0, &mut ev);
        let (reason, message) = waiting(&w);
        assert_eq!(reason.as_deref(), Some("ErrImagePull"));
        assert!(message.unwrap().contains("not found"));
        assert!(ev.iter().any(|e| e.type_ == "Warning" && e.message == "Error: ErrImagePull"));
        // The failure is shown, not replaced by the back-off at the next sync.
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        assert_eq!(waiting(&w).0.as_deref(), Some("ErrImagePull"));
        assert_eq!(ev.iter().filter(|e| e.reason == "BackOff").count(), 0);
        // Retries after 10 s, then 20 s, 40 s...; each failure shows for 10 s, then the
        // back-off until the next try (none after the first: its back-off is 10 s too).
        let mut pulls = Vec::new();
        let mut shown = Vec::new();
        for s in 1..200u64 {
            let before = rt.pulls_started;
            w.sync(&mut rt, t0.plus_secs(s), &mut ev);
            if rt.pulls_started > before {
                pulls.push(s);
            }
            let reason = waiting(&w).0.unwrap_or_default();
            if shown.last().is_none_or(|(_, r)| *r != reason) {
                shown.push((s, reason));
            }
        }
        assert_eq!(pulls, [10, 30, 70, 150]);
        let want: Vec<(u64, String)> =
            [(1, "ErrImagePull"), (20, "ImagePullBackOff"), (30, "ErrImagePull"), (40, "ImagePullBackOff")]
                .into_iter()
                .chain([(70, "ErrImagePull"), (80, "ImagePullBackOff"), (150, "ErrImagePull")])
                .chain([(160, "ImagePullBackOff")])
                .map(|(s, r)| (s, r.to_string()))
                .collect();
        assert_eq!(shown, want);
        assert_eq!(
            waiting(&w),
            (Some("ImagePullBackOff".into()), Some("Back-off pulling image \"busybox:1.36\"".into()))
        );
        assert_eq!(ev.iter().filter(|e| e.reason == "BackOff").count(), 4);
        // The registry has it again: the next retry pulls it and the container runs.
        rt.failing_images.clear();
        for s in 200..400u64 {
            w.sync(&mut rt, t0.plus_secs(s), &mut ev);
        }
        assert!(cstate(&w).running.is_some());
        assert_eq!(w.status().phase.as_deref(), Some("Running"));
    }

    #[test]
    fn pull_policies() {
        let t0 = Time::from_secs(1_000_000);
        let mut rt = SimRuntime::new();
        let mut ev: Vec<PodEvent> = Vec::new();
        // Never, and the image is not there.
        let mut p = pod("Always", "sleep infinity");
        p.spec.containers[0].image_pull_policy = Some("Never".into());
        let mut w = worker(p.clone(), t0);
        w.sync(&mut rt, t0, &mut ev);
        w.sync(&mut rt, t0.plus_secs(1), &mut ev);
        assert_eq!(waiting(&w).0.as_deref(), Some("ErrImageNeverPull"));
        assert_eq!(ev.iter().filter(|e| e.reason == "ErrImageNeverPull").count(), 1);
        assert_eq!(rt.pulls_started, 0);
        // IfNotPresent pulls once; a second pod of the image finds it.
        let mut q = pod("Always", "sleep infinity");
        q.spec.containers[0].image_pull_policy = Some("IfNotPresent".into());
        let mut a = worker(q.clone(), t0);
        a.sync(&mut rt, t0, &mut ev);
        q.metadata.uid = Some("uid-2".into());
        ev.clear();
        let mut b = worker(q, t0);
        b.sync(&mut rt, t0, &mut ev);
        assert_eq!(rt.pulls_started, 1);
        assert!(ev
            .iter()
            .any(|e| e.message == "Container image \"busybox:1.36\" already present on machine"));
        // Now Never finds it too.
        w.sync(&mut rt, t0.plus_secs(2), &mut ev);
        assert!(cstate(&w).running.is_some());
        // Always pulls at every start, restarts included.
        let mut r = pod("Always", "exit 1");
        r.spec.containers[0].image_pull_policy = Some("Always".into());
        let mut c = worker(r, t0);
        for s in 0..12 {
            c.sync(&mut rt, t0.plus_secs(s), &mut ev);
        }
        assert_eq!(rt.pulls_started, 4, "three starts of the Always container");
        assert_eq!(c.status().container_statuses[0].restart_count, 2);
    }

    #[test]
    fn requests_and_qos() {
        let mut p = pod("Always", "true");
        assert_eq!(qos_class(&p), "BestEffort");
        let mut req = BTreeMap::new();
        req.insert("cpu".to_string(), "500m".to_string());
        req.insert("memory".to_string(), "64Mi".to_string());
        p.spec.containers[0].resources =
            Some(ResourceRequirements { requests: Some(req.clone()), limits: None });
        assert_eq!(qos_class(&p), "Burstable");
        assert_eq!(pod_requests(&p), PodRequests { cpu_millis: 500, memory_bytes: 64 << 20 });
        p.spec.containers[0].resources =
            Some(ResourceRequirements { requests: Some(req.clone()), limits: Some(req) });
        assert_eq!(qos_class(&p), "Guaranteed");
    }
}
