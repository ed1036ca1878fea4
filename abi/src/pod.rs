//! Pods: the pod spec a pod VM runs ([`PodSpec`], behind the `serde` feature) and the
//! pod bundle, the one boot module that carries a pod ([`bundle`]).
//!
//! Both are allegations when read: the bundle parser and [`PodSpec::from_json`] check
//! everything and return a typed error; neither panics on any input.

/// Most containers in one pod.
pub const MAX_CONTAINERS: usize = 16;
/// Longest pod or container name.
pub const MAX_NAME: usize = 63;
/// Longest pod spec JSON.
pub const MAX_SPEC_BYTES: usize = 64 << 10;
/// Process limit of a pod whose spec does not say.
pub const DEFAULT_PROCESS_LIMIT: u32 = 64;

/// Whether `name` may name a pod or a container: 1 to [`MAX_NAME`] ASCII letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit. Names appear in console lines
/// (`<pod>/<container>> text`), so none can hold `/`, `>`, `:`, spaces or control bytes.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A command the node gives a managed pod's guest through [`crate::nr::POD_CONTROL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start container `container` (again, after it ended: a restart inside the same VM).
    /// A container whose processes still run ignores it.
    Start {
        /// Index in the pod spec.
        container: u8,
    },
    /// Send `signal` (1 to 64) to every process of container `container`.
    Signal {
        /// Index in the pod spec.
        container: u8,
        /// The Linux signal number.
        signal: u8,
    },
}

impl Command {
    /// The encoding [`crate::nr::POD_CONTROL`] returns: bits 0-7 the operation (1 start,
    /// 2 signal), bits 8-15 the container index, bits 16-23 the signal; never 0.
    pub const fn to_raw(self) -> u64 {
        match self {
            Command::Start { container } => 1 | (container as u64) << 8,
            Command::Signal { container, signal } => 2 | (container as u64) << 8 | (signal as u64) << 16,
        }
    }

    /// Decodes [`Command::to_raw`]; `None` for 0 (no command) and anything malformed.
    pub const fn from_raw(raw: u64) -> Option<Command> {
        if raw >> 24 != 0 {
            return None;
        }
        let container = ((raw >> 8) & 0xff) as u8;
        let signal = ((raw >> 16) & 0xff) as u8;
        match raw & 0xff {
            1 if signal == 0 => Some(Command::Start { container }),
            2 if signal >= 1 && signal <= 64 => Some(Command::Signal { container, signal }),
            _ => None,
        }
    }
}

#[cfg(feature = "serde")]
pub use spec::*;

#[cfg(feature = "serde")]
mod spec {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use serde::{Deserialize, Serialize};

    /// What a pod VM runs: `{"name": "demo", "containers": [{"name": "main", "command":
    /// ["/bin/busybox", "echo", "hi"], "env": ["PATH=/bin"], "workingDir": "/"}],
    /// "processLimit": 64}`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PodSpec {
        /// The pod's name ([`valid_name`]).
        pub name: String,
        /// Its containers, 1 to [`MAX_CONTAINERS`]; a container's index here is the one
        /// the hypercalls use.
        pub containers: Vec<ContainerSpec>,
        /// Most processes alive at once in the pod (default [`DEFAULT_PROCESS_LIMIT`]).
        #[serde(default = "default_process_limit")]
        pub process_limit: u32,
        /// A managed pod (a node's pod from the API): no container starts until the node
        /// says so through [`crate::nr::POD_CONTROL`], a container may be started again
        /// after it ended, and the VM stays up when every container has ended (the node
        /// tears it down). Unmanaged (the default): every container starts at boot and
        /// the VM exits once all have ended.
        #[serde(default, skip_serializing_if = "core::ops::Not::not")]
        pub managed: bool,
    }

    /// One container of a pod.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ContainerSpec {
        /// The container's name ([`valid_name`], unique in the pod).
        pub name: String,
        /// The full argv (entrypoint, command and arguments already resolved); `command[0]`
        /// is looked up in `PATH` when it holds no `/`.
        pub command: Vec<String>,
        /// The environment, `NAME=value` strings.
        #[serde(default)]
        pub env: Vec<String>,
        /// The working directory (default `/`).
        #[serde(default = "default_working_dir")]
        pub working_dir: String,
    }

    /// What an image bundle says of its image (its spec slot): the references it answers
    /// to and how its containers run, from the OCI image config. `{"names":
    /// ["docker.io/library/busybox:latest"], "id": "sha256:...", "entrypoint": [], "cmd":
    /// ["sh"], "env": ["PATH=/bin"], "workingDir": ""}`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ImageConfig {
        /// Fully qualified references (`registry/repository:tag`), at least one.
        pub names: Vec<String>,
        /// The image id: the digest of its config blob (`sha256:...`).
        #[serde(default)]
        pub id: String,
        /// The config's Entrypoint.
        #[serde(default)]
        pub entrypoint: Vec<String>,
        /// The config's Cmd.
        #[serde(default)]
        pub cmd: Vec<String>,
        /// The config's Env.
        #[serde(default)]
        pub env: Vec<String>,
        /// The config's WorkingDir ("" for `/`).
        #[serde(default)]
        pub working_dir: String,
    }

    impl ImageConfig {
        /// Parses an image description; at least one name, none empty.
        pub fn from_json(bytes: &[u8]) -> Result<ImageConfig, SpecError> {
            if bytes.len() > MAX_SPEC_BYTES {
                return Err(SpecError::TooLong(bytes.len()));
            }
            let c: ImageConfig = serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))?;
            if c.names.is_empty() || c.names.iter().any(|n| n.is_empty()) {
                return Err(SpecError::Json("an image needs at least one name".to_string()));
            }
            Ok(c)
        }
    }

    fn default_process_limit() -> u32 {
        DEFAULT_PROCESS_LIMIT
    }

    fn default_working_dir() -> String {
        "/".to_string()
    }

    /// Why a pod spec was refused.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum SpecError {
        /// Longer than [`MAX_SPEC_BYTES`].
        TooLong(usize),
        /// Not JSON of the spec's shape (serde_json's message).
        Json(String),
        /// The pod's name is not a [`valid_name`].
        BadPodName(String),
        /// A container's name is not a [`valid_name`].
        BadContainerName(String),
        /// Two containers have this name.
        DuplicateContainer(String),
        /// No containers, or more than [`MAX_CONTAINERS`].
        ContainerCount(usize),
        /// This container's command is empty or its first word is.
        EmptyCommand(String),
        /// The process limit is 0.
        ZeroProcessLimit,
    }

    impl core::fmt::Display for SpecError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                SpecError::TooLong(n) => write!(f, "pod spec is {n} bytes (at most {MAX_SPEC_BYTES})"),
                SpecError::Json(m) => write!(f, "pod spec is not valid: {m}"),
                SpecError::BadPodName(n) => {
                    write!(f, "bad pod name {n:?} (1 to {MAX_NAME} of A-Z a-z 0-9 - _ .)")
                }
                SpecError::BadContainerName(n) => {
                    write!(f, "bad container name {n:?} (1 to {MAX_NAME} of A-Z a-z 0-9 - _ .)")
                }
                SpecError::DuplicateContainer(n) => write!(f, "two containers are named {n:?}"),
                SpecError::ContainerCount(n) => write!(f, "pod has {n} containers (1 to {MAX_CONTAINERS})"),
                SpecError::EmptyCommand(n) => write!(f, "container {n:?} has an empty command"),
                SpecError::ZeroProcessLimit => write!(f, "process limit is 0"),
            }
        }
    }

    impl PodSpec {
        /// Parses and checks a spec.
        pub fn from_json(bytes: &[u8]) -> Result<PodSpec, SpecError> {
            if bytes.len() > MAX_SPEC_BYTES {
                return Err(SpecError::TooLong(bytes.len()));
            }
            let spec: PodSpec = serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))?;
            spec.check()?;
            Ok(spec)
        }

        /// Checks names, counts and commands.
        pub fn check(&self) -> Result<(), SpecError> {
            if !valid_name(&self.name) {
                return Err(SpecError::BadPodName(self.name.clone()));
            }
            if self.containers.is_empty() || self.containers.len() > MAX_CONTAINERS {
                return Err(SpecError::ContainerCount(self.containers.len()));
            }
            for (i, c) in self.containers.iter().enumerate() {
                if !valid_name(&c.name) {
                    return Err(SpecError::BadContainerName(c.name.clone()));
                }
                if self.containers[..i].iter().any(|o| o.name == c.name) {
                    return Err(SpecError::DuplicateContainer(c.name.clone()));
                }
                if c.command.first().is_none_or(|w| w.is_empty()) {
                    return Err(SpecError::EmptyCommand(c.name.clone()));
                }
            }
            if self.process_limit == 0 {
                return Err(SpecError::ZeroProcessLimit);
            }
            Ok(())
        }

        /// The spec as JSON (checked first, so what is written can be read back).
        pub fn to_json(&self) -> Result<Vec<u8>, SpecError> {
            self.check()?;
            let v = serde_json::to_vec(self).map_err(|e| SpecError::Json(e.to_string()))?;
            if v.len() > MAX_SPEC_BYTES {
                return Err(SpecError::TooLong(v.len()));
            }
            Ok(v)
        }
    }
}

/// The pod bundle: the boot module of a pod VM, holding the crx-guest ELF, the pod spec
/// JSON and the image's layers. Each layer starts on a 4 KiB boundary of the bundle, so
/// when the bundle itself is page-aligned in host memory (boot loaders place modules on
/// page boundaries) the hypervisor maps the layers into guests without copying.
///
/// Layout, all little-endian:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`MAGIC`] |
/// | 8 | 4 | layer count (0 to [`MAX_LAYERS`]) |
/// | 12 | 4 | zero |
/// | 16 | 16 | guest ELF: offset, length (u64 each) |
/// | 32 | 16 | pod spec JSON: offset, length |
/// | 48 | 24 each | layer: offset (multiple of [`PAGE`]), length (u64 each), [`crate::LayerKind`] (u32), zero (u32) |
///
/// Offsets count from the bundle's first byte.
pub mod bundle {
    use crate::{layout, LayerInfo, LayerKind};

    /// The first 8 bytes of a pod bundle.
    pub const MAGIC: [u8; 8] = *b"CRXPOD\x00\x01";
    /// The first 8 bytes of an image bundle: the same layout, whose spec slot holds an
    /// image description ([`crate::pod::ImageConfig`]) instead of a pod spec. A node's image
    /// store is made of these.
    pub const IMAGE_MAGIC: [u8; 8] = *b"CRXIMG\x00\x01";
    /// Header bytes before the layer entries.
    pub const HEADER: usize = 48;
    /// Bytes per layer entry.
    pub const ENTRY: usize = 24;
    /// Most layers in a bundle.
    pub const MAX_LAYERS: usize = 128;
    /// Alignment of every layer's offset.
    pub const PAGE: usize = 4096;

    /// Why a pod bundle was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PodBundleError {
        /// Shorter than its header or the magic differs.
        NotAPodBundle,
        /// More than [`MAX_LAYERS`] layers.
        BadLayerCount(u32),
        /// A reserved field is not zero.
        Reserved,
        /// The guest image lies outside the bundle or is empty.
        GuestOutOfBounds,
        /// The pod spec lies outside the bundle or is empty.
        SpecOutOfBounds,
        /// Layer `n` lies outside the bundle.
        LayerOutOfBounds(usize),
        /// Layer `n` does not start on a [`PAGE`] boundary.
        LayerMisaligned(usize),
        /// Layer `n` has an unknown kind.
        BadLayerKind(usize, u32),
        /// The layers do not fit in the layer window ([`layout::LAYERS_SIZE`]).
        LayersTooLarge,
    }

    impl core::fmt::Display for PodBundleError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                PodBundleError::NotAPodBundle => write!(f, "not a pod bundle"),
                PodBundleError::BadLayerCount(n) => {
                    write!(f, "pod bundle has {n} layers (at most {MAX_LAYERS})")
                }
                PodBundleError::Reserved => write!(f, "pod bundle has a non-zero reserved field"),
                PodBundleError::GuestOutOfBounds => {
                    write!(f, "pod bundle's guest image is empty or out of bounds")
                }
                PodBundleError::SpecOutOfBounds => {
                    write!(f, "pod bundle's pod spec is empty or out of bounds")
                }
                PodBundleError::LayerOutOfBounds(i) => {
                    write!(f, "pod bundle's layer {i} lies outside the bundle")
                }
                PodBundleError::LayerMisaligned(i) => write!(f, "pod bundle's layer {i} is not page-aligned"),
                PodBundleError::BadLayerKind(i, k) => {
                    write!(f, "pod bundle's layer {i} has unknown kind {k}")
                }
                PodBundleError::LayersTooLarge => {
                    write!(f, "pod bundle's layers do not fit the layer window")
                }
            }
        }
    }

    /// Whether `bytes` starts like a pod bundle.
    pub fn is_pod_bundle(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(&MAGIC[..])
    }

    /// Whether `bytes` starts like an image bundle.
    pub fn is_image_bundle(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(&IMAGE_MAGIC[..])
    }

    /// One layer of a checked bundle.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Layer<'a> {
        /// The layer's bytes.
        pub bytes: &'a [u8],
        /// Offset of the layer in the bundle (a multiple of [`PAGE`]).
        pub offset: usize,
        /// How it is encoded.
        pub kind: LayerKind,
        /// Where it appears in a pod VM's guest-physical space.
        pub gpa: u64,
    }

    impl Layer<'_> {
        /// The record [`crate::nr::LAYER_INFO`] returns.
        pub fn info(&self) -> LayerInfo {
            LayerInfo { gpa: self.gpa, len: self.bytes.len() as u64, kind: self.kind as u32, _pad: 0 }
        }
    }

    /// A checked pod bundle.
    #[derive(Debug, Clone, Copy)]
    pub struct PodBundle<'a> {
        bytes: &'a [u8],
        guest: &'a [u8],
        spec: &'a [u8],
        layers: usize,
    }

    fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
    }

    fn region(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        bytes.get(off..off.checked_add(len)?)
    }

    /// Bytes a layer of `len` bytes takes in the layer window.
    fn window_bytes(len: u64) -> Option<u64> {
        len.checked_add(PAGE as u64 - 1).map(|v| v & !(PAGE as u64 - 1))
    }

    /// The window used after adding a layer of `len` bytes to `used`, if it still fits.
    pub(crate) fn window_add(used: u64, len: u64) -> Option<u64> {
        window_bytes(len).and_then(|w| used.checked_add(w)).filter(|&w| w <= layout::LAYERS_SIZE)
    }

    impl<'a> PodBundle<'a> {
        /// Checks the header, the guest image, the spec and every layer entry.
        pub fn parse(bytes: &'a [u8]) -> Result<PodBundle<'a>, PodBundleError> {
            if bytes.len() < HEADER || !(is_pod_bundle(bytes) || is_image_bundle(bytes)) {
                return Err(PodBundleError::NotAPodBundle);
            }
            let count = u32_at(bytes, 8).ok_or(PodBundleError::NotAPodBundle)?;
            if count as usize > MAX_LAYERS {
                return Err(PodBundleError::BadLayerCount(count));
            }
            if u32_at(bytes, 12) != Some(0) {
                return Err(PodBundleError::Reserved);
            }
            let field = |at| u64_at(bytes, at).ok_or(PodBundleError::NotAPodBundle);
            let guest = region(bytes, field(16)?, field(24)?)
                .filter(|g| !g.is_empty())
                .ok_or(PodBundleError::GuestOutOfBounds)?;
            let spec = region(bytes, field(32)?, field(40)?)
                .filter(|s| !s.is_empty())
                .ok_or(PodBundleError::SpecOutOfBounds)?;
            let b = PodBundle { bytes, guest, spec, layers: count as usize };
            let mut window: u64 = 0;
            for i in 0..b.layers {
                let at = HEADER + i * ENTRY;
                let off = u64_at(bytes, at).ok_or(PodBundleError::LayerOutOfBounds(i))?;
                let len = u64_at(bytes, at + 8).ok_or(PodBundleError::LayerOutOfBounds(i))?;
                let kind = u32_at(bytes, at + 16).ok_or(PodBundleError::LayerOutOfBounds(i))?;
                if u32_at(bytes, at + 20) != Some(0) {
                    return Err(PodBundleError::Reserved);
                }
                region(bytes, off, len).ok_or(PodBundleError::LayerOutOfBounds(i))?;
                if off % PAGE as u64 != 0 {
                    return Err(PodBundleError::LayerMisaligned(i));
                }
                LayerKind::from_raw(kind).ok_or(PodBundleError::BadLayerKind(i, kind))?;
                window = window_add(window, len).ok_or(PodBundleError::LayersTooLarge)?;
            }
            Ok(b)
        }

        /// Whether this is an image bundle ([`IMAGE_MAGIC`]) rather than a pod bundle.
        pub fn is_image(&self) -> bool {
            is_image_bundle(self.bytes)
        }

        /// The crx-guest ELF image.
        pub fn guest(&self) -> &'a [u8] {
            self.guest
        }

        /// The pod spec JSON.
        pub fn spec(&self) -> &'a [u8] {
            self.spec
        }

        /// Number of layers.
        pub fn layer_count(&self) -> usize {
            self.layers
        }

        /// The whole bundle.
        pub fn bytes(&self) -> &'a [u8] {
            self.bytes
        }

        /// Layer `i` (lowest first, in the order they apply), with its place in the layer
        /// window: each layer follows the previous one, rounded up to [`PAGE`].
        pub fn layer(&self, i: usize) -> Option<Layer<'a>> {
            if i >= self.layers {
                return None;
            }
            let mut gpa = layout::LAYERS_BASE;
            for k in 0..=i {
                let at = HEADER + k * ENTRY;
                let off = u64_at(self.bytes, at)?;
                let len = u64_at(self.bytes, at + 8)?;
                if k == i {
                    let kind = LayerKind::from_raw(u32_at(self.bytes, at + 16)?)?;
                    let bytes = region(self.bytes, off, len)?;
                    return Some(Layer { bytes, offset: usize::try_from(off).ok()?, kind, gpa });
                }
                gpa = gpa.checked_add(window_bytes(len)?)?;
            }
            None
        }

        /// The layers in order.
        pub fn layers(&self) -> impl Iterator<Item = Layer<'a>> + '_ {
            (0..self.layers).filter_map(|i| self.layer(i))
        }
    }

    /// Packs a pod bundle: the guest ELF, the spec JSON, then each layer on a [`PAGE`]
    /// boundary.
    #[cfg(feature = "alloc")]
    pub fn pack(guest: &[u8], spec: &[u8], layers: &[(&[u8], LayerKind)]) -> alloc::vec::Vec<u8> {
        pack_with(MAGIC, guest, spec, layers)
    }

    /// Packs an image bundle: the crx-guest ELF, the image description JSON
    /// ([`crate::pod::ImageConfig`]) and the layers, as [`pack`] does.
    #[cfg(feature = "alloc")]
    pub fn pack_image(guest: &[u8], config: &[u8], layers: &[(&[u8], LayerKind)]) -> alloc::vec::Vec<u8> {
        pack_with(IMAGE_MAGIC, guest, config, layers)
    }

    #[cfg(feature = "alloc")]
    fn pack_with(
        magic: [u8; 8],
        guest: &[u8],
        spec: &[u8],
        layers: &[(&[u8], LayerKind)],
    ) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0u8; HEADER + layers.len() * ENTRY];
        out[..8].copy_from_slice(&magic);
        out[8..12].copy_from_slice(&(layers.len() as u32).to_le_bytes());
        let put = |out: &mut alloc::vec::Vec<u8>, at: usize, v: u64| {
            out[at..at + 8].copy_from_slice(&v.to_le_bytes())
        };
        let g = out.len();
        out.extend_from_slice(guest);
        put(&mut out, 16, g as u64);
        put(&mut out, 24, guest.len() as u64);
        let s = out.len();
        out.extend_from_slice(spec);
        put(&mut out, 32, s as u64);
        put(&mut out, 40, spec.len() as u64);
        for (i, (bytes, kind)) in layers.iter().enumerate() {
            let off = out.len().next_multiple_of(PAGE);
            out.resize(off, 0);
            out.extend_from_slice(bytes);
            let at = HEADER + i * ENTRY;
            put(&mut out, at, off as u64);
            put(&mut out, at + 8, bytes.len() as u64);
            out[at + 16..at + 20].copy_from_slice(&(*kind as u32).to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::bundle::*;
    use super::*;
    use crate::layout;
    #[cfg(feature = "alloc")]
    use crate::LayerKind;

    #[test]
    fn commands_round_trip_and_junk_is_no_command() {
        for c in [
            Command::Start { container: 0 },
            Command::Start { container: 15 },
            Command::Signal { container: 3, signal: 15 },
            Command::Signal { container: 0, signal: 9 },
            Command::Signal { container: 255, signal: 64 },
        ] {
            assert_ne!(c.to_raw(), 0);
            assert_eq!(Command::from_raw(c.to_raw()), Some(c));
        }
        for raw in [0, 3, 1 | 9 << 16, 2, 2 | 65 << 16, 1 << 24, u64::MAX] {
            assert_eq!(Command::from_raw(raw), None, "{raw:#x}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("demo"));
        assert!(valid_name("a.b_c-9"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a> b"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(MAX_NAME + 1)));
        assert!(valid_name(&"x".repeat(MAX_NAME)));
    }

    #[cfg(feature = "alloc")]
    fn sample() -> Vec<u8> {
        pack(
            b"\x7fELF-guest",
            b"{\"name\":\"p\"}",
            &[(b"tar-bytes", LayerKind::Tar), (&[7u8; 5000], LayerKind::TarGzip)],
        )
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn bundle_round_trip() {
        let b = sample();
        let p = PodBundle::parse(&b).expect("valid");
        assert_eq!(p.guest(), b"\x7fELF-guest");
        assert_eq!(p.spec(), b"{\"name\":\"p\"}");
        assert_eq!(p.layer_count(), 2);
        let l0 = p.layer(0).expect("layer 0");
        let l1 = p.layer(1).expect("layer 1");
        assert!(p.layer(2).is_none());
        assert_eq!(l0.bytes, b"tar-bytes");
        assert_eq!(l0.kind, LayerKind::Tar);
        assert_eq!(l0.gpa, layout::LAYERS_BASE);
        assert_eq!(l0.offset % PAGE, 0);
        assert_eq!(l1.bytes, &[7u8; 5000][..]);
        assert_eq!(l1.gpa, layout::LAYERS_BASE + PAGE as u64);
        assert_eq!(l1.offset % PAGE, 0);
        assert_eq!(l1.info().len, 5000);
        assert_eq!(l1.info().layer_kind(), Some(LayerKind::TarGzip));
        assert_eq!(p.layers().count(), 2);
        // No layers is a valid bundle (a pod with an empty root).
        let e = pack(b"g", b"s", &[]);
        assert_eq!(PodBundle::parse(&e).map(|p| p.layer_count()), Ok(0));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn malformed_bundles_are_refused() {
        let b = sample();
        let set64 = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let set32 = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        assert_eq!(PodBundle::parse(&b[..40]).err(), Some(PodBundleError::NotAPodBundle));
        assert_eq!(PodBundle::parse(b"CRXVMS\x00\x01").err(), Some(PodBundleError::NotAPodBundle));
        let mut x = b.clone();
        set32(&mut x, 8, MAX_LAYERS as u32 + 1);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::BadLayerCount(MAX_LAYERS as u32 + 1)));
        let mut x = b.clone();
        set32(&mut x, 8, 100); // entries run into the payload and past the end
        assert!(PodBundle::parse(&x).is_err());
        let mut x = b.clone();
        set32(&mut x, 12, 1);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::Reserved));
        let mut x = b.clone();
        set64(&mut x, 24, u64::MAX);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::GuestOutOfBounds));
        let mut x = b.clone();
        set64(&mut x, 24, 0);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::GuestOutOfBounds));
        let mut x = b.clone();
        set64(&mut x, 32, u64::MAX - 2);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::SpecOutOfBounds));
        let mut x = b.clone();
        set64(&mut x, HEADER + ENTRY + 8, 1 << 40);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::LayerOutOfBounds(1)));
        let mut x = b.clone();
        set64(&mut x, HEADER, 4097);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::LayerMisaligned(0)));
        let mut x = b.clone();
        set32(&mut x, HEADER + 16, 9);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::BadLayerKind(0, 9)));
        let mut x = b.clone();
        set32(&mut x, HEADER + ENTRY + 20, 1);
        assert_eq!(PodBundle::parse(&x).err(), Some(PodBundleError::Reserved));
        // Truncating the bundle anywhere inside the last layer is refused.
        assert_eq!(PodBundle::parse(&b[..b.len() - 1]).err(), Some(PodBundleError::LayerOutOfBounds(1)));
        // Every single-byte corruption of the header either parses or fails cleanly, and a
        // parsed bundle's slices stay inside the bytes.
        for at in 0..HEADER + 2 * ENTRY {
            for v in [0u8, 1, 0x80, 0xff] {
                let mut x = b.clone();
                x[at] = v;
                if let Ok(p) = PodBundle::parse(&x) {
                    assert!(p.layers().count() == p.layer_count());
                }
            }
        }
    }

    #[test]
    fn layers_must_fit_the_window() {
        assert_eq!(window_add(0, 1), Some(PAGE as u64));
        assert_eq!(window_add(PAGE as u64, PAGE as u64), Some(2 * PAGE as u64));
        assert_eq!(window_add(0, 0), Some(0));
        assert_eq!(window_add(0, layout::LAYERS_SIZE), Some(layout::LAYERS_SIZE));
        assert_eq!(window_add(1 << 30, layout::LAYERS_SIZE), None);
        assert_eq!(window_add(0, u64::MAX), None);
        assert_eq!(window_add(u64::MAX - 10, 1), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn pod_spec_json() {
        let json = br#"{"name": "demo", "containers": [{"name": "main",
            "command": ["/bin/busybox", "echo", "hi"], "env": ["PATH=/bin"], "workingDir": "/tmp"}],
            "processLimit": 32}"#;
        let s = PodSpec::from_json(json).expect("valid spec");
        assert_eq!(s.name, "demo");
        assert_eq!(s.process_limit, 32);
        assert_eq!(s.containers[0].command, ["/bin/busybox", "echo", "hi"]);
        assert_eq!(s.containers[0].working_dir, "/tmp");
        let back = PodSpec::from_json(&s.to_json().expect("encodes")).expect("round trip");
        assert_eq!(back, s);
        // Defaults.
        let s = PodSpec::from_json(br#"{"name":"p","containers":[{"name":"c","command":["true"]}]}"#)
            .expect("ok");
        assert_eq!(s.process_limit, DEFAULT_PROCESS_LIMIT);
        assert_eq!(s.containers[0].working_dir, "/");
        assert!(s.containers[0].env.is_empty());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn bad_pod_specs() {
        let bad = |j: &str| PodSpec::from_json(j.as_bytes()).err();
        assert!(matches!(bad("{"), Some(SpecError::Json(_))));
        assert!(matches!(bad("[]"), Some(SpecError::Json(_))));
        assert!(matches!(bad(r#"{"name":"p"}"#), Some(SpecError::Json(_))));
        assert_eq!(bad(r#"{"name":"p","containers":[]}"#), Some(SpecError::ContainerCount(0)));
        assert_eq!(
            bad(r#"{"name":"p/q","containers":[{"name":"c","command":["x"]}]}"#),
            Some(SpecError::BadPodName("p/q".into()))
        );
        assert_eq!(
            bad(r#"{"name":"p","containers":[{"name":"c> x","command":["x"]}]}"#),
            Some(SpecError::BadContainerName("c> x".into()))
        );
        assert_eq!(
            bad(r#"{"name":"p","containers":[{"name":"c","command":["x"]},{"name":"c","command":["y"]}]}"#),
            Some(SpecError::DuplicateContainer("c".into()))
        );
        assert_eq!(
            bad(r#"{"name":"p","containers":[{"name":"c","command":[]}]}"#),
            Some(SpecError::EmptyCommand("c".into()))
        );
        assert_eq!(
            bad(r#"{"name":"p","containers":[{"name":"c","command":["x"]}],"processLimit":0}"#),
            Some(SpecError::ZeroProcessLimit)
        );
        let long = alloc::format!("{{\"name\":\"{}\"}}", "x".repeat(MAX_SPEC_BYTES));
        assert!(matches!(bad(&long), Some(SpecError::TooLong(_))));
        assert_eq!(
            PodSpec::from_json(b"\xff\xfe").err().map(|e| matches!(e, SpecError::Json(_))),
            Some(true)
        );
    }
}
