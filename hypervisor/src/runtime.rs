//! kubelet-lite's container runtime over the node's pod VMs: one crx-guest VM per pod,
//! built when the pod's first container starts (from the image store and
//! [`crate::vm::podspec`]), containers started, restarted and signalled inside it through
//! the pod's command queue, the VM torn down when the pod goes.
//!
//! A container id is `crx://UID/INDEX/START`: the pod, the container's index in the pod
//! spec and which start of it this is.
//!
//! Stopping: SIGTERM to the container's processes; SIGKILL once the grace period has
//! passed; if the container still runs [`KILL_WAIT_SECS`] after that (a guest that does
//! not take commands), the whole VM is stopped. A VM the hypervisor stops (a broken or
//! hostile guest) or that runs out of memory ends its running containers with a reason.

use crate::images::Store;
use crate::vm::exit::StopReason;
use crate::vm::manager;
use crate::vm::podspec;
use crate::vm::sched::VmId;
use crate::vm::services::End;
use crate::vm::setup::PodParts;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use crx_abi::pod::Command;
use kubelet_lite::runtime::{
    ContainerRef, ImageInfo, LogLine, LogView, PullStatus, RegistryAuth, Runtime, RuntimeError, RuntimeState,
};
use kubelet_lite::time::Time;
use kubelet_lite::types::{Container, Pod};

/// How long after SIGKILL a container may still run before its VM is stopped.
pub const KILL_WAIT_SECS: u64 = 5;
const SIGTERM: u8 = 15;
const SIGKILL: u8 = 9;

struct Stop {
    kill_at: Time,
    killed: bool,
}

struct PodVm {
    namespace: String,
    name: String,
    vm: VmId,
    /// Container names by index.
    containers: Vec<String>,
    stops: BTreeMap<usize, Stop>,
}

/// The runtime.
pub struct PodVms {
    store: Store,
    pods: BTreeMap<String, PodVm>,
}

/// The wall-clock time of monotonic `ns` (the same every time it is asked, so a
/// container's start and end times stay what they were first reported as).
fn wall_of(ns: u64) -> Time {
    Time(crate::net::node::wall_micros_at(ns))
}

fn parse_id(id: &str) -> Option<(&str, usize, u32)> {
    let rest = id.strip_prefix("crx://")?;
    let mut it = rest.rsplitn(3, '/');
    let start = it.next()?.parse().ok()?;
    let index = it.next()?.parse().ok()?;
    Some((it.next()?, index, start))
}

impl PodVms {
    /// A runtime over `store`.
    pub fn new(store: Store) -> PodVms {
        PodVms { store, pods: BTreeMap::new() }
    }

    /// The image store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn create(&mut self, c: &ContainerRef, pod: &Pod) -> Result<(), RuntimeError> {
        let first = pod.spec.containers.first().and_then(|x| x.image.as_deref()).unwrap_or("");
        let image = self.store.lookup(first).map_err(|e| RuntimeError::ImagePull(e.to_string()))?;
        let store = &self.store;
        let bundle_of =
            |x: &Container| store.lookup(x.image.as_deref().unwrap_or("")).map(|i| i.bundle.bytes().as_ptr());
        if pod.spec.containers.iter().any(|x| bundle_of(x).ok() != Some(image.bundle.bytes().as_ptr())) {
            return Err(RuntimeError::Start(String::from(
                "the containers of a pod VM share one root filesystem: every container must name the same image",
            )));
        }
        let name = podspec::vm_name(&c.namespace, &c.pod, &c.pod_uid);
        let plan = podspec::plan(pod, &name, |_| Ok(&image.config)).map_err(RuntimeError::Start)?;
        let parts = PodParts { bundle: image.bundle, spec: plan.spec };
        let vm =
            manager::start_pod_vm(&parts, plan.mem_bytes, plan.millicores).map_err(RuntimeError::Start)?;
        log::info!(
            "pod {}/{}: VM {} with {} MiB{}",
            c.namespace,
            c.pod,
            vm.0,
            plan.mem_bytes >> 20,
            plan.millicores.map(|m| format!(", {m} millicores")).unwrap_or_default()
        );
        let containers = parts.spec.containers.iter().map(|x| x.name.clone()).collect();
        self.pods.insert(
            c.pod_uid.clone(),
            PodVm {
                namespace: c.namespace.clone(),
                name: c.pod.clone(),
                vm,
                containers,
                stops: BTreeMap::new(),
            },
        );
        Ok(())
    }
}

impl Runtime for PodVms {
    fn start_container(
        &mut self,
        c: &ContainerRef,
        pod: &Pod,
        spec: &Container,
        _now: Time,
    ) -> Result<String, RuntimeError> {
        self.store
            .lookup(spec.image.as_deref().unwrap_or(""))
            .map_err(|e| RuntimeError::ImagePull(e.to_string()))?;
        // A VM that has ended (stopped, or out of memory) is replaced by a new one.
        if let Some(p) = self.pods.get(&c.pod_uid) {
            if manager::with_pod(p.vm, |_, end| end.is_some()).unwrap_or(true) {
                let vm = p.vm;
                manager::release_vm(vm);
                self.pods.remove(&c.pod_uid);
            }
        }
        if !self.pods.contains_key(&c.pod_uid) {
            self.create(c, pod)?;
        }
        let p = self
            .pods
            .get_mut(&c.pod_uid)
            .ok_or_else(|| RuntimeError::Start(String::from("pod VM vanished")))?;
        let index = p.containers.iter().position(|n| *n == c.container).ok_or_else(|| {
            RuntimeError::Start(format!("container {:?} is not in the pod VM", c.container))
        })?;
        let u8_index =
            u8::try_from(index).map_err(|_| RuntimeError::Start(String::from("too many containers")))?;
        if !manager::pod_command(p.vm, Command::Start { container: u8_index }) {
            return Err(RuntimeError::Start(String::from(
                "the pod VM refused to start the container (still running?)",
            )));
        }
        p.stops.remove(&index);
        let start =
            manager::with_pod(p.vm, |s, _| s.containers.get(index).map_or(0, |x| x.starts)).unwrap_or(0);
        Ok(format!("crx://{}/{index}/{start}", c.pod_uid))
    }

    fn stop_container(&mut self, id: &str, grace_secs: u64, now: Time) {
        let Some((uid, index, _)) = parse_id(id) else { return };
        let Some(p) = self.pods.get_mut(uid) else { return };
        let Ok(i) = u8::try_from(index) else { return };
        let signal = if grace_secs == 0 { SIGKILL } else { SIGTERM };
        manager::pod_command(p.vm, Command::Signal { container: i, signal });
        p.stops.entry(index).or_insert(Stop { kill_at: now.plus_secs(grace_secs), killed: grace_secs == 0 });
    }

    fn poll(&mut self, id: &str, now: Time) -> Option<RuntimeState> {
        let (uid, index, start) = parse_id(id)?;
        let p = self.pods.get_mut(uid)?;
        let vm = p.vm;
        let state = manager::with_pod(vm, |s, end| {
            let c = s.containers.get(index)?;
            if c.starts != start {
                return None;
            }
            let started_at = wall_of(c.started_ns);
            Some(match (c.exit, end) {
                (Some(code), _) if c.oom_killed => RuntimeState::Exited {
                    code,
                    started_at,
                    finished_at: wall_of(c.ended_ns),
                    reason: Some(String::from("OOMKilled")),
                    message: Some(String::from(
                        "a process of the container was killed: the pod VM ran out of memory",
                    )),
                },
                (Some(code), _) => RuntimeState::exited(code, started_at, wall_of(c.ended_ns)),
                (None, None) => RuntimeState::Running { started_at },
                (None, Some(end)) => {
                    let (reason, message) = match end {
                        End::Stopped(StopReason::OutOfMemory) => {
                            ("OOMKilled", String::from("the pod VM ran out of memory"))
                        }
                        End::Stopped(StopReason::Killed) => {
                            ("Error", String::from("killed: the pod VM was stopped"))
                        }
                        End::Stopped(r) => ("Error", format!("the hypervisor stopped the pod VM: {r}")),
                        End::Exited(code) => {
                            ("Error", format!("the pod VM exited (code {code}) while the container ran"))
                        }
                    };
                    RuntimeState::Exited {
                        code: 137,
                        started_at,
                        finished_at: now,
                        reason: Some(reason.to_string()),
                        message: Some(message),
                    }
                }
            })
        })
        .flatten()?;
        if let (RuntimeState::Running { .. }, Some(stop)) = (&state, p.stops.get_mut(&index)) {
            if now >= stop.kill_at && !stop.killed {
                stop.killed = true;
                if let Ok(i) = u8::try_from(index) {
                    manager::pod_command(vm, Command::Signal { container: i, signal: SIGKILL });
                }
            } else if now >= stop.kill_at.plus_secs(KILL_WAIT_SECS) {
                log::warn!(
                    "pod {}/{}: container still runs after SIGKILL; stopping its VM",
                    p.namespace,
                    p.name
                );
                manager::kill_vm(vm);
            }
        }
        Some(state)
    }

    fn remove_pod(&mut self, pod_uid: &str) {
        if let Some(p) = self.pods.remove(pod_uid) {
            manager::kill_vm(p.vm);
            manager::release_vm(p.vm);
        }
    }

    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<LogView> {
        let p = self.pods.values().find(|p| p.namespace == namespace && p.name == pod)?;
        let index = p.containers.iter().position(|n| n == container)?;
        manager::with_pod(p.vm, |s, end| {
            let c = s.containers.get(index)?;
            let log = if previous { c.previous.as_ref()? } else { &c.lines };
            let lines =
                log.lines().map(|l| LogLine { time: wall_of(l.at_ns), text: l.text.clone() }).collect();
            Some(LogView {
                lines,
                first: log.dropped(),
                instance: u64::from(c.starts).saturating_sub(u64::from(previous)),
                running: !previous && c.exit.is_none() && end.is_none() && c.starts > 0,
            })
        })
        .flatten()
    }

    fn image_status(&self, image: &str) -> Option<ImageInfo> {
        self.store.lookup(image).ok().map(|i| i.info())
    }

    /// The images of the boot modules are the node's: a pull finds them there.
    fn pull_image(&mut self, image: &str, _auth: &[RegistryAuth], _now: Time) -> PullStatus {
        match self.store.lookup(image) {
            Ok(i) => PullStatus::Pulled(i.info()),
            Err(e) => PullStatus::Failed(e.to_string()),
        }
    }

    fn list_images(&self) -> Vec<ImageInfo> {
        self.store.images().iter().map(|i| i.info()).collect()
    }
}
