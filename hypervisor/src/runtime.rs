//! kubelet-lite's container runtime over the node's pod VMs: one crx-guest VM per pod,
//! built when the pod's first container starts (from the image store and
//! [`crate::vm::podspec`]), containers started, restarted and signalled inside it through
//! the pod's command queue, the VM torn down when the pod goes.
//!
//! A container id is `crx://UID/INDEX/START`: the pod, the container's index in the pod
//! spec and which start of it this is.
//!
//! Images: those of the boot modules, and those pulled from registries
//! ([`PodVms::pump_pulls`] polls each pull, a future over the node's stack, from the
//! agent's loop). A registry the node cannot reach (neither insecure nor covered by a
//! registry CA bundle) is not asked: an image of it that the boot image carries is used as
//! it is.
//!
//! Stopping: SIGTERM to the container's processes; SIGKILL once the grace period has
//! passed; if the container still runs [`KILL_WAIT_SECS`] after that (a guest that does
//! not take commands), the whole VM is stopped. A VM the hypervisor stops (a broken or
//! hostile guest) or that runs out of memory ends its running containers with a reason.

use crate::images::{GcPolicy, Held, LayerCache, Store};
use crate::mm::direct::FrameRun;
use crate::net::node::NodeStack;
use crate::net::registry::RegistryConnector;
use crate::net::tls::TlsConfig;
use crate::vm::exit::StopReason;
use crate::vm::manager;
use crate::vm::podspec;
use crate::vm::sched::VmId;
use crate::vm::services::End;
use crate::vm::setup::LayerMap;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use crx_abi::pod::Command;
use kubelet_lite::image::Reference;
use kubelet_lite::nodecfg::Registries;
use kubelet_lite::registry::{self, LayerStore, PullError, PullOptions, Scheme};
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

/// Gives a pulled layer's frames back once the last image and pod VM using it let go.
fn release_layer(phys: u64, frames: usize) {
    if let Err(e) = crate::mm::free_run(phys, frames) {
        log::warn!("images: giving back a layer's frames: {e}");
    }
}

/// The layer store of a pull on the node: each tar written straight into frames of its own
/// as it is inflated (sized by the gzip trailer or the tar's length), kept in the node's
/// layer cache once its diff_id is checked.
struct FrameLayers {
    cache: LayerCache,
    /// The layer being written: its digest, its frames, bytes written, bytes expected.
    current: Option<(String, FrameRun, usize, usize)>,
}

impl LayerStore for FrameLayers {
    type Stored = alloc::sync::Arc<Held>;

    fn reuse(&mut self, digest: &str, diff_id: &str) -> Option<Self::Stored> {
        self.cache.get(digest, diff_id)
    }

    fn begin(&mut self, digest: &str, len_hint: u64) -> Result<(), PullError> {
        let len = usize::try_from(len_hint).map_err(|_| PullError::OutOfMemory { bytes: len_hint })?;
        let frames = len.div_ceil(crate::mm::PAGE_SIZE as usize);
        let run = FrameRun::new(frames).ok_or(PullError::OutOfMemory { bytes: len_hint })?;
        self.current = Some((digest.into(), run, 0, len));
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), PullError> {
        let Some((digest, run, at, len)) = self.current.as_mut() else {
            return Err(PullError::Gzip {
                layer: String::new(),
                message: String::from("a write before its layer"),
            });
        };
        if at.saturating_add(chunk.len()) > *len || !run.write(*at, chunk) {
            return Err(PullError::Gzip {
                layer: digest.clone(),
                message: format!("inflates past the {len} bytes its gzip trailer gives"),
            });
        }
        *at += chunk.len();
        Ok(())
    }

    fn finish(&mut self, diff_id: &str) -> Result<Self::Stored, PullError> {
        let Some((digest, mut run, at, len)) = self.current.take() else {
            return Err(PullError::Gzip {
                layer: String::new(),
                message: String::from("no layer to finish"),
            });
        };
        if at != len {
            return Err(PullError::Gzip {
                layer: digest,
                message: format!("inflates to {at} bytes, its gzip trailer gives {len}"),
            });
        }
        run.zero_from(at);
        let (phys, frames) = run.into_raw();
        let held = alloc::sync::Arc::new(Held::new(phys, frames, at as u64, release_layer));
        self.cache.insert(&digest, diff_id, &held);
        Ok(held)
    }

    fn abort(&mut self) {
        self.current = None;
    }
}

type PullFuture =
    Pin<Box<dyn Future<Output = Result<(registry::Image, Vec<alloc::sync::Arc<Held>>), PullError>> + Send>>;

/// A pull under way, or its result until it is asked for.
struct Pull {
    future: Option<PullFuture>,
    done: Option<Result<ImageInfo, String>>,
    /// When it was first polled (monotonic ms); once done, when it finished.
    started_ms: u64,
}

/// How the node reaches registries.
pub struct Pulls {
    /// The node configuration's registries.
    pub registries: Registries,
    /// Its registry CA bundle, made into a TLS configuration.
    pub tls: Option<TlsConfig>,
}

/// The runtime.
pub struct PodVms {
    store: Store,
    pods: BTreeMap<String, PodVm>,
    pulling: Option<Pulls>,
    pulls: BTreeMap<String, Pull>,
    /// The node's usable memory.
    memory_bytes: u64,
    gc: GcPolicy,
    next_gc_ms: u64,
}

/// Monotonic milliseconds, for when images were last used.
fn now_ms() -> u64 {
    crate::arch::time::now_ns() / 1_000_000
}

/// Bytes of free frames.
fn free_bytes() -> u64 {
    (crate::mm::frame_census().0 as u64).saturating_mul(crate::mm::PAGE_SIZE)
}

/// Most pulls under way at once (the others wait their turn, reported as pulling): the
/// kubelet's `maxParallelImagePulls`, so pulls cannot take every socket of the stack.
const MAX_PARALLEL_PULLS: usize = 2;

/// How long a finished pull's result waits to be asked for before it is dropped (its pod
/// went away meanwhile).
const PULL_RESULT_KEEP_MS: u64 = 600_000;

/// The most bytes of free memory one image may take, compressed and inflated together: a
/// quarter of what is free, so the parallel pulls together cannot starve the node.
fn image_budget_bytes() -> u64 {
    let (free, _) = crate::mm::frame_census();
    (free as u64).saturating_mul(crate::mm::PAGE_SIZE) / 4
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
    /// A runtime over `store` on a node of `memory_bytes`, pulling from registries as
    /// `pulling` says (never with `None`).
    pub fn new(store: Store, pulling: Option<Pulls>, memory_bytes: u64) -> PodVms {
        PodVms {
            store,
            pods: BTreeMap::new(),
            pulling,
            pulls: BTreeMap::new(),
            memory_bytes,
            gc: GcPolicy::default(),
            next_gc_ms: 0,
        }
    }

    /// Whether more than `percent` of the node's memory is in use.
    fn above(&self, percent: u64) -> bool {
        let used = self.memory_bytes.saturating_sub(free_bytes());
        used.saturating_mul(100) > self.memory_bytes.saturating_mul(percent)
    }

    /// Evicts unused pulled images while `pressed()`, saying which and why on the console.
    fn evict(&mut self, pressed: impl FnMut() -> bool, why: &str) {
        for name in self.store.evict_unused(pressed) {
            crate::kprintln!("node: image {name} evicted {why}");
        }
    }

    /// The image GC: above the high threshold of memory in use, unused pulled images are
    /// evicted until the low one is reached. At most once a second.
    fn collect_images(&mut self) {
        let now = now_ms();
        if now < self.next_gc_ms {
            return;
        }
        self.next_gc_ms = now + 1000;
        if self.above(self.gc.high_percent) {
            let (memory, low) = (self.memory_bytes, self.gc.low_percent);
            let why = format!("(more than {}% of the node's memory in use)", self.gc.high_percent);
            self.evict(
                || memory.saturating_sub(free_bytes()).saturating_mul(100) > memory.saturating_mul(low),
                &why,
            );
        }
    }

    /// Whether the node may ask `registry` for images: it is insecure, or a registry CA
    /// bundle is configured.
    fn reaches(&self, registry: &str) -> bool {
        self.pulling
            .as_ref()
            .is_some_and(|p| p.tls.is_some() || p.registries.insecure.iter().any(|r| r == registry))
    }

    fn start_pull(&self, reference: Reference, auth: &[RegistryAuth]) -> Result<PullFuture, String> {
        let p = self.pulling.as_ref().ok_or_else(|| String::from("this node pulls from no registry"))?;
        let scheme = registry::scheme_for(&reference.registry, &p.registries.insecure);
        if scheme == Scheme::Https && p.tls.is_none() {
            return Err(format!(
                "registry {} is neither insecure in the node's configuration nor covered by a registry CA bundle",
                reference.registry
            ));
        }
        let budget = image_budget_bytes();
        let mut opts = PullOptions::new(scheme, budget / 3);
        opts.max_unpacked_bytes = budget.saturating_sub(opts.max_image_bytes);

        opts.credentials = auth
            .iter()
            .find(|a| a.registry == reference.registry)
            .map(|a| (a.username.clone(), a.password.clone()));
        let connector = RegistryConnector::new(NodeStack, p.registries.endpoints.clone(), p.tls.clone());
        let layers = FrameLayers { cache: self.store.layer_cache(), current: None };
        Ok(Box::pin(async move {
            let (mut connector, mut layers) = (connector, layers);
            registry::pull_into(&mut connector, &reference, &opts, &mut layers).await
        }))
    }

    /// Moves every pull along; a finished one puts its image in the store. For the agent's
    /// loop, outside the stack's lock.
    pub fn pump_pulls(&mut self) {
        self.collect_images();
        crate::net::node::next_pull_round();
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        let now = now_ms();
        self.pulls
            .retain(|_, p| p.future.is_some() || now.saturating_sub(p.started_ms) < PULL_RESULT_KEEP_MS);
        let mut running = 0;
        for (reference, pull) in self.pulls.iter_mut() {
            let Some(f) = pull.future.as_mut() else { continue };
            if running == MAX_PARALLEL_PULLS {
                // Not polled yet: it waits its turn (a future does nothing until polled).
                pull.started_ms = now;
                continue;
            }
            running += 1;
            let core::task::Poll::Ready(result) = f.as_mut().poll(&mut cx) else { continue };
            pull.future = None;
            let took_ms = now_ms().saturating_sub(pull.started_ms);
            pull.started_ms = now_ms();
            pull.done = Some(match result {
                Ok((image, stored)) => {
                    let added = self.store.add_pulled(&image, stored, now_ms());
                    if let Ok(info) = &added {
                        let frames = self.store.lookup(reference).map(|i| i.held_frames()).unwrap_or(0);
                        crate::kprintln!(
                            "node: pulled {reference}: {} bytes from the registry in {took_ms} ms, held inflated as {} bytes in {frames} frames: {}",
                            image.size_bytes(),
                            info.size_bytes,
                            info.id
                        );
                    }
                    added
                }
                Err(e) => Err(e.to_string()),
            });
        }
    }

    /// The image store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn create(&mut self, c: &ContainerRef, pod: &Pod) -> Result<(), RuntimeError> {
        let first = pod.spec.containers.first().and_then(|x| x.image.as_deref()).unwrap_or("");
        let image = self.store.lookup(first).map_err(|e| RuntimeError::ImagePull(e.to_string()))?;
        let store = &self.store;
        let same = |x: &Container| {
            store.lookup(x.image.as_deref().unwrap_or("")).is_ok_and(|i| alloc::sync::Arc::ptr_eq(&i, &image))
        };
        if !pod.spec.containers.iter().all(same) {
            return Err(RuntimeError::Start(String::from(
                "the containers of a pod VM share one root filesystem: every container must name the same image",
            )));
        }
        self.store.touch(first, now_ms());
        let name = podspec::vm_name(&c.namespace, &c.pod, &c.pod_uid);
        let plan = podspec::plan(pod, &name, |_| Ok(&image.config)).map_err(RuntimeError::Start)?;
        // Room for the VM first: unused pulled images go before a pod is refused.
        let need = plan.mem_bytes.saturating_add(crate::vm::memory::HOST_RESERVE_BYTES);
        self.evict(|| free_bytes() < need, "to make room for a pod VM");
        let layers: Vec<LayerMap> =
            image.layers.iter().map(|l| LayerMap { hpa: l.hpa, len: l.len, kind: l.kind }).collect();
        let holder: alloc::sync::Arc<dyn core::any::Any + Send + Sync> = image.clone();
        let pod_image = manager::PodImage { guest: image.guest, layers: &layers, holder };
        let vm = manager::start_pod_vm(pod_image, &plan.spec, plan.mem_bytes, plan.millicores)
            .map_err(RuntimeError::Start)?;
        let spec = plan.spec;
        log::info!(
            "pod {}/{}: VM {} with {} MiB{}",
            c.namespace,
            c.pod,
            vm.0,
            plan.mem_bytes >> 20,
            plan.millicores.map(|m| format!(", {m} millicores")).unwrap_or_default()
        );
        let containers = spec.containers.iter().map(|x| x.name.clone()).collect();
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
        self.store.info_of(image)
    }

    /// Pulls from the image's registry when the node reaches it; an image of another
    /// registry that the boot image carries is used as it is.
    fn pull_image(&mut self, image: &str, auth: &[RegistryAuth], _now: Time) -> PullStatus {
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(e) => return PullStatus::Failed(format!("invalid image reference: {e}")),
        };
        let key = reference.to_string();
        if let Some(pull) = self.pulls.get_mut(&key) {
            return match pull.done.take() {
                None => PullStatus::Pulling,
                Some(done) => {
                    self.pulls.remove(&key);
                    match done {
                        Ok(info) => PullStatus::Pulled(info),
                        Err(why) => PullStatus::Failed(why),
                    }
                }
            };
        }
        if !self.reaches(&reference.registry) {
            return match self.store.info_of(image) {
                Some(info) => PullStatus::Pulled(info),
                None => PullStatus::Failed(
                    self.store.lookup(image).err().map(|e| e.to_string()).unwrap_or_default(),
                ),
            };
        }
        match self.start_pull(reference, auth) {
            Ok(future) => {
                self.pulls.insert(key, Pull { future: Some(future), done: None, started_ms: now_ms() });
                PullStatus::Pulling
            }
            Err(why) => PullStatus::Failed(why),
        }
    }

    /// The pod VM of a finished pod is stopped: its memory comes back, its containers'
    /// ends and logs stay with its record.
    fn stop_pod_sandbox(&mut self, pod_uid: &str) {
        if let Some(p) = self.pods.get(pod_uid) {
            log::info!("pod {}/{}: done; stopping its VM", p.namespace, p.name);
            manager::kill_vm(p.vm);
        }
    }

    fn list_images(&self) -> Vec<ImageInfo> {
        self.store.infos()
    }
}
