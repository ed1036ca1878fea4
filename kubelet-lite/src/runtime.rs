//! The container runtime interface the pod workers drive.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::time::Time;
use crate::types::{Container, Pod};

/// Identifies one container of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
}

/// What the runtime reports about a started container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeState {
    /// Still running.
    Running { started_at: Time },
    /// Exited with `code`. `reason` overrides the kubelet's Completed/Error (e.g.
    /// `OOMKilled`), and `message` says what the runtime knows of the end.
    Exited { code: i32, started_at: Time, finished_at: Time, reason: Option<String>, message: Option<String> },
}

impl RuntimeState {
    /// An exit with the kubelet's usual reason (Completed for 0, else Error).
    pub fn exited(code: i32, started_at: Time, finished_at: Time) -> RuntimeState {
        RuntimeState::Exited { code, started_at, finished_at, reason: None, message: None }
    }
}

/// One line of container output (without its newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: Time,
    pub text: String,
}

/// A container's log as kept by the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogView {
    pub lines: Vec<LogLine>,
    /// How many older lines of this instance the runtime no longer keeps: `lines[0]` is
    /// line number `first` of the instance.
    pub first: u64,
    /// Which instance of the container this is (it changes when the container restarts).
    pub instance: u64,
    /// True while the container may still write more.
    pub running: bool,
}

/// Why a container could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeError {
    /// The image could not be pulled (reported as `ErrImagePull`).
    ImagePull(String),
    /// The container could not be created or started (reported as `RunContainerError`).
    Start(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::ImagePull(m) => write!(f, "failed to pull image: {m}"),
            RuntimeError::Start(m) => write!(f, "failed to start container: {m}"),
        }
    }
}

/// An image the runtime holds: what Node.status.images and a container status's imageID
/// report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The names it answers to, normalised (`docker.io/library/busybox:1.36`) and by digest
    /// (`docker.io/library/busybox@sha256:...`).
    pub names: Vec<String>,
    /// The imageID a container status shows: `REPOSITORY@sha256:MANIFEST` for a pulled image.
    pub id: String,
    /// Bytes it takes on the node.
    pub size_bytes: u64,
}

/// Where a pull stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullStatus {
    /// Under way: ask again later.
    Pulling,
    /// Done: the image is on the node.
    Pulled(ImageInfo),
    /// Failed, with the reason (for the container's ErrImagePull message).
    Failed(String),
}

/// Credentials for one registry, from a pod's imagePullSecrets.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry they are for, as an image reference names it (`127.0.0.1:5000`).
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RegistryAuth {{ registry: {:?}, username: {:?}, password: <hidden> }}",
            self.registry, self.username
        )
    }
}

/// A container runtime: starts and stops containers, reports their state and keeps their
/// logs (the current and the previous instance of each container).
pub trait Runtime {
    /// Starts container `spec` of `pod` and returns its runtime id. The whole pod comes
    /// along so that a runtime that gives each pod a sandbox (a pod VM) can build it when
    /// the pod's first container starts.
    fn start_container(
        &mut self,
        c: &ContainerRef,
        pod: &Pod,
        spec: &Container,
        now: Time,
    ) -> Result<String, RuntimeError>;
    /// Stops a running container: SIGTERM, then SIGKILL once `grace_secs` have passed (it
    /// then reports `Exited`).
    fn stop_container(&mut self, id: &str, grace_secs: u64, now: Time);
    /// The container's state at `now`; `None` if the id is unknown.
    fn poll(&mut self, id: &str, now: Time) -> Option<RuntimeState>;
    /// Forgets every container of the pod and its logs.
    fn remove_pod(&mut self, pod_uid: &str);
    /// The log of the current (or, with `previous`, the last exited) instance of a container.
    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<LogView>;
    /// The image `image` names, if the node holds it.
    fn image_status(&self, image: &str) -> Option<ImageInfo>;
    /// Starts pulling `image` (with the credentials among `auth` for its registry), or, if a
    /// pull of it is under way, says how it stands. A pull's result is given once: the next
    /// call after [`PullStatus::Pulled`] or [`PullStatus::Failed`] starts a new pull.
    fn pull_image(&mut self, image: &str, auth: &[RegistryAuth], now: Time) -> PullStatus;
    /// Every image the node holds.
    fn list_images(&self) -> Vec<ImageInfo>;
    /// The pod is done (no container runs or will run again): what its sandbox holds can
    /// go (a pod VM's memory), while its containers' states and logs stay until
    /// [`Runtime::remove_pod`].
    fn stop_pod_sandbox(&mut self, _pod_uid: &str) {}
}
