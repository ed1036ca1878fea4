//! The parts of the hypervisor ABI version 2 this kernel uses beyond version 1: the pod
//! hypercalls, the layer window and the pod spec. Kept in one module so that the rest of
//! the kernel names them in one place only.

use alloc::string::String;
use alloc::vec::Vec;
use serde::Deserialize;

/// Hypercall numbers added in ABI version 2.
pub mod nr {
    /// `(container_index, stream (1 = stdout, 2 = stderr), ptr, len) -> bytes taken`.
    pub const LOG_WRITE: u64 = 9;
    /// `(container_index, exit_code) -> 0`: records a container's end; the VM keeps running.
    pub const CONTAINER_EXIT: u64 = 10;
    /// `(ptr, len) -> total length of the pod spec JSON`; copies min(len, total) bytes.
    pub const POD_SPEC: u64 = 11;
    /// `(index, ptr to LayerInfo) -> 0`, or `Error::Invalid` past the last layer.
    pub const LAYER_INFO: u64 = 12;
}

/// Guest-physical base of the window where the layers' bytes are mapped read-only.
pub const LAYERS_BASE: u64 = 0x40_0000_0000;
/// Size of the layer window.
pub const LAYERS_SIZE: u64 = 256 << 30;

/// One layer as `LAYER_INFO` describes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct LayerInfo {
    /// Guest-physical address of the first byte (inside the layer window).
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
    /// [`LAYER_TAR`] or [`LAYER_TAR_GZIP`].
    pub kind: u32,
    /// Zero.
    pub _pad: u32,
}

/// `LayerInfo::kind` of an uncompressed tar layer.
pub const LAYER_TAR: u32 = 0;
/// `LayerInfo::kind` of a gzip-compressed tar layer.
pub const LAYER_TAR_GZIP: u32 = 1;

impl LayerInfo {
    /// Whether the layer lies wholly inside the layer window.
    pub fn in_window(&self) -> bool {
        self.gpa >= LAYERS_BASE
            && self.gpa.checked_add(self.len).is_some_and(|end| end <= LAYERS_BASE + LAYERS_SIZE)
    }
}

/// The pod spec, as JSON from `POD_SPEC`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The pod's name.
    pub name: String,
    /// Its containers, in order (index = container index in the hypercalls).
    pub containers: Vec<ContainerSpec>,
    /// Most processes alive at once in the VM.
    #[serde(default = "default_process_limit")]
    pub process_limit: u32,
}

fn default_process_limit() -> u32 {
    64
}

/// One container of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// The container's name.
    pub name: String,
    /// The full argv (entrypoint, cmd and args already resolved).
    pub command: Vec<String>,
    /// `KEY=value` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// The initial working directory.
    #[serde(default = "default_working_dir")]
    pub working_dir: String,
}

fn default_working_dir() -> String {
    String::from("/")
}

/// Why a pod spec was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// The bytes are not the JSON of a pod spec.
    Json(String),
    /// The spec has no containers.
    NoContainers,
    /// Container `n` has an empty command.
    EmptyCommand(usize),
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpecError::Json(e) => write!(f, "pod spec is not valid JSON: {e}"),
            SpecError::NoContainers => write!(f, "pod spec has no containers"),
            SpecError::EmptyCommand(i) => write!(f, "container {i} has an empty command"),
        }
    }
}

impl PodSpec {
    /// Parses and checks a pod spec.
    pub fn parse(json: &[u8]) -> Result<PodSpec, SpecError> {
        let spec: PodSpec =
            serde_json::from_slice(json).map_err(|e| SpecError::Json(alloc::format!("{e}")))?;
        if spec.containers.is_empty() {
            return Err(SpecError::NoContainers);
        }
        if let Some(i) = spec.containers.iter().position(|c| c.command.is_empty()) {
            return Err(SpecError::EmptyCommand(i));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let json = br#"{"name": "demo", "containers": [{"name": "main",
          "command": ["/bin/busybox", "echo", "hi"], "env": ["PATH=/bin"],
          "workingDir": "/tmp"}], "processLimit": 7}"#;
        let s = PodSpec::parse(json).expect("valid spec");
        assert_eq!(s.name, "demo");
        assert_eq!(s.process_limit, 7);
        assert_eq!(s.containers[0].command, ["/bin/busybox", "echo", "hi"]);
        assert_eq!(s.containers[0].working_dir, "/tmp");
    }

    #[test]
    fn refuses_bad_specs() {
        assert!(matches!(PodSpec::parse(b"{"), Err(SpecError::Json(_))));
        assert_eq!(PodSpec::parse(br#"{"name":"x","containers":[]}"#), Err(SpecError::NoContainers));
        let empty = br#"{"name":"x","containers":[{"name":"a","command":[]}]}"#;
        assert_eq!(PodSpec::parse(empty), Err(SpecError::EmptyCommand(0)));
        let s = PodSpec::parse(br#"{"name":"x","containers":[{"name":"a","command":["sh"]}]}"#).expect("ok");
        assert_eq!(s.process_limit, 64);
        assert_eq!(s.containers[0].working_dir, "/");
    }

    #[test]
    fn layer_window_check() {
        let l = LayerInfo { gpa: LAYERS_BASE, len: 4096, kind: LAYER_TAR, _pad: 0 };
        assert!(l.in_window());
        assert!(!LayerInfo { gpa: 0x1000, ..l }.in_window());
        assert!(!LayerInfo { len: u64::MAX, ..l }.in_window());
        assert_eq!(core::mem::size_of::<LayerInfo>(), 24);
    }
}
