//! The pod parts of the hypervisor ABI (crx-abi versions 2 to 4) this kernel uses, named in one
//! place: the pod hypercalls, the layer window and the pod spec.

pub use crx_abi::layout::{LAYERS_BASE, LAYERS_SIZE};
pub use crx_abi::pod::{Command, ContainerSpec, PodSpec, SpecError, DEFAULT_PROCESS_LIMIT};
pub use crx_abi::{LayerInfo, LayerKind, LOG_WRITE_MAX, STREAM_STDERR, STREAM_STDOUT};

/// Hypercall numbers added in ABI versions 2 to 4.
pub mod nr {
    pub use crx_abi::nr::{CONTAINER_ENTRY, CONTAINER_EXIT, LAYER_INFO, LOG_WRITE, POD_CONTROL, POD_SPEC};
}

/// Whether a layer lies wholly inside the layer window.
pub fn in_window(l: &LayerInfo) -> bool {
    l.gpa >= LAYERS_BASE && l.gpa.checked_add(l.len).is_some_and(|end| end <= LAYERS_BASE + LAYERS_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let json = br#"{"name": "demo", "containers": [{"name": "main",
          "command": ["/bin/busybox", "echo", "hi"], "env": ["PATH=/bin"],
          "workingDir": "/tmp"}], "processLimit": 7}"#;
        let s = PodSpec::from_json(json).expect("valid spec");
        assert_eq!(s.name, "demo");
        assert_eq!(s.process_limit, 7);
        assert_eq!(s.containers[0].command, ["/bin/busybox", "echo", "hi"]);
        assert_eq!(s.containers[0].working_dir, "/tmp");
    }

    #[test]
    fn layer_window_check() {
        let l = LayerInfo { gpa: LAYERS_BASE, len: 4096, kind: 0, _pad: 0 };
        assert!(in_window(&l));
        assert!(!in_window(&LayerInfo { gpa: 0x1000, ..l }));
        assert!(!in_window(&LayerInfo { len: u64::MAX, ..l }));
    }
}
