//! Container images on the host side: reading an OCI image layout (every blob's sha256
//! checked), turning a plain root-filesystem directory into one tar layer, and building
//! the busybox test image.
//!
//! An OCI image layout (image-spec `image-layout.md`) is a directory with `oci-layout`,
//! `index.json` and `blobs/sha256/<hex>`; the index names a manifest, the manifest names
//! the config and the layers (lowest first). Everything read is checked: digests, sizes,
//! media types, JSON shape. Nothing here panics on a malformed image.

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

// The media types, as the node's registry client knows them.
pub use kubelet_lite::registry::manifest::{
    DOCKER_LAYER_GZIP as MEDIA_DOCKER_LAYER, DOCKER_MANIFEST as MEDIA_DOCKER_MANIFEST,
    OCI_CONFIG as MEDIA_CONFIG, OCI_INDEX as MEDIA_INDEX, OCI_LAYER_GZIP as MEDIA_LAYER_TAR_GZIP,
    OCI_LAYER_TAR as MEDIA_LAYER_TAR, OCI_MANIFEST as MEDIA_MANIFEST,
};

/// The content of a new image's `etc/hello.txt`.
pub const HELLO_TXT: &str = "hello from the busybox image\n";
/// Applets linked to busybox in the busybox image's `bin/`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "echo",
    "cat",
    "ls",
    "wc",
    "sha256sum",
    "md5sum",
    "sleep",
    "true",
    "false",
    "env",
    "pwd",
    "mkdir",
    "rmdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "head",
    "tail",
    "grep",
    "sed",
    "printf",
    "test",
    "[",
    "uname",
    "id",
    "date",
    "seq",
    "sort",
    "uniq",
    "tr",
    "cut",
    "find",
    "xargs",
    "touch",
    "stat",
    "chmod",
    "basename",
    "dirname",
    "yes",
    "expr",
    "hostname",
    "whoami",
    "readlink",
    "realpath",
    "od",
    "hexdump",
    "du",
    "df",
    "ps",
    "kill",
    "awk",
];

/// What went wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not an OCI image layout and not a directory.
    #[error("{0} is neither an OCI image layout (no oci-layout file) nor a directory")]
    NotAnImage(PathBuf),
    /// JSON of the wrong shape.
    #[error("{what} is not valid: {message}")]
    Json {
        /// Which document.
        what: String,
        /// serde_json's message.
        message: String,
    },
    /// A digest that is not `sha256:<64 hex>`.
    #[error("unsupported or malformed digest {0:?} (only sha256 is supported)")]
    BadDigest(String),
    /// A blob whose content does not hash to its digest.
    #[error("blob {digest} is corrupt: its content hashes to sha256:{actual}")]
    DigestMismatch {
        /// The digest it is named by.
        digest: String,
        /// What it hashes to.
        actual: String,
    },
    /// A blob whose size differs from its descriptor.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The digest.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// A media type this runner does not take.
    #[error("unsupported media type {0}")]
    MediaType(String),
    /// The index names no manifest for linux/amd64.
    #[error("the image index has no linux/amd64 manifest")]
    NoManifest,
    /// A layer's uncompressed content does not match the config's diff_id.
    #[error("layer {index} does not match the config's diff_id {expected} (it is sha256:{actual})")]
    DiffIdMismatch {
        /// Layer index.
        index: usize,
        /// The config's value.
        expected: String,
        /// What the layer holds.
        actual: String,
    },
    /// A layer that is not a valid (gzip) archive.
    #[error("layer {index} cannot be read: {message}")]
    BadLayer {
        /// Layer index.
        index: usize,
        /// Why.
        message: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

/// The [`ImageError::Io`] of a failed file operation described by `what`.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    io(what)
}

fn json<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Json { what: what.into(), message: e.to_string() })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`.
    pub architecture: String,
    /// `linux`.
    pub os: String,
}

/// `index.json` (or a nested image index).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// 2.
    pub schema_version: u32,
    /// [`MEDIA_INDEX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// 2.
    pub schema_version: u32,
    /// [`MEDIA_MANIFEST`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, lowest first.
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config the runner uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `Entrypoint`.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `Env`.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each uncompressed layer.
    pub diff_ids: Vec<String>,
}

/// An image config (image-spec `config.md`), the parts used here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// How to run it.
    #[serde(default)]
    pub config: RunConfig,
    /// The layers' diff_ids.
    #[serde(default)]
    pub rootfs: RootFs,
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// tar+gzip.
    Gzip,
}

impl Compression {
    /// The ABI's layer kind.
    pub fn kind(self) -> crx_abi::LayerKind {
        match self {
            Compression::None => crx_abi::LayerKind::Tar,
            Compression::Gzip => crx_abi::LayerKind::TarGzip,
        }
    }
}

/// One layer, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob's bytes.
    pub bytes: Vec<u8>,
    /// Its compression.
    pub compression: Compression,
}

/// An image, read and checked: its layers and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// Entrypoint, Cmd, Env, WorkingDir.
    pub config: RunConfig,
    /// The image id, `sha256:<hex>`: the digest of its config blob (of its one layer for a
    /// plain root-filesystem directory, which has no config).
    pub id: String,
}

/// The environment of an image without one (what Docker sets).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Image {
    /// Reads `path`: an OCI image layout when it has an `oci-layout` file, else a plain
    /// root-filesystem directory (tarred into one layer).
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        if path.join("oci-layout").is_file() {
            read_layout(path)
        } else if path.is_dir() {
            let tar = tar_dir(path)?;
            let id = sha256_digest(&tar);
            Ok(Image {
                layers: vec![Layer { bytes: tar, compression: Compression::None }],
                config: RunConfig::default(),
                id,
            })
        } else {
            Err(ImageError::NotAnImage(path.to_path_buf()))
        }
    }

    /// The container's argv: `args` when given (they replace the image's Entrypoint and
    /// Cmd), else Entrypoint + Cmd.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        if !args.is_empty() {
            return args.to_vec();
        }
        let mut v = self.config.entrypoint.clone().unwrap_or_default();
        v.extend(self.config.cmd.clone().unwrap_or_default());
        v
    }

    /// The container's environment (the image's, or a default `PATH`).
    pub fn env(&self) -> Vec<String> {
        match &self.config.env {
            Some(e) if !e.is_empty() => e.clone(),
            _ => vec![DEFAULT_PATH.to_string()],
        }
    }

    /// The working directory (`/` when the image names none).
    pub fn working_dir(&self) -> String {
        self.config.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    }

    /// The same image with every layer a plain tar (gzip layers inflated), as a node holds
    /// an image it pulled.
    pub fn with_plain_layers(&self) -> Result<Image, ImageError> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(index, l)| match l.compression {
                Compression::None => Ok(l.clone()),
                Compression::Gzip => {
                    let mut raw = Vec::new();
                    GzDecoder::new(&l.bytes[..])
                        .read_to_end(&mut raw)
                        .map_err(|e| ImageError::BadLayer { index, message: e.to_string() })?;
                    Ok(Layer { bytes: raw, compression: Compression::None })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Image { layers, config: self.config.clone(), id: self.id.clone() })
    }
}

fn blob_path(root: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| ImageError::BadDigest(digest.into()))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ImageError::BadDigest(digest.into()));
    }
    Ok(root.join("blobs").join("sha256").join(hex))
}

/// Reads the blob a descriptor names and checks its size and digest.
pub fn read_blob(root: &Path, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(root, &d.digest)?;
    let bytes = fs::read(&path).map_err(io(format!("reading blob {}", path.display())))?;
    if bytes.len() as u64 != d.size {
        return Err(ImageError::SizeMismatch {
            digest: d.digest.clone(),
            expected: d.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = sha256_digest(&bytes);
    if actual != d.digest {
        return Err(ImageError::DigestMismatch {
            digest: d.digest.clone(),
            actual: actual.trim_start_matches("sha256:").into(),
        });
    }
    Ok(bytes)
}

fn pick_manifest(root: &Path, index: &Index, depth: u32) -> Result<Manifest, ImageError> {
    let fits =
        |d: &&Descriptor| d.platform.as_ref().is_none_or(|p| p.architecture == "amd64" && p.os == "linux");
    for d in index.manifests.iter().filter(fits) {
        match d.media_type.as_str() {
            MEDIA_MANIFEST | MEDIA_DOCKER_MANIFEST => {
                return json("the image manifest", &read_blob(root, d)?);
            }
            MEDIA_INDEX if depth < 4 => {
                let nested: Index = json("a nested image index", &read_blob(root, d)?)?;
                return pick_manifest(root, &nested, depth + 1);
            }
            _ => continue,
        }
    }
    Err(ImageError::NoManifest)
}

fn read_layout(root: &Path) -> Result<Image, ImageError> {
    let index_bytes = fs::read(root.join("index.json")).map_err(io("reading index.json"))?;
    let index: Index = json("index.json", &index_bytes)?;
    let manifest = pick_manifest(root, &index, 0)?;
    if manifest.config.media_type != MEDIA_CONFIG
        && manifest.config.media_type != "application/vnd.docker.container.image.v1+json"
    {
        return Err(ImageError::MediaType(manifest.config.media_type.clone()));
    }
    let config: ImageConfig = json("the image config", &read_blob(root, &manifest.config)?)?;
    let mut layers = Vec::new();
    for (i, d) in manifest.layers.iter().enumerate() {
        let compression = match d.media_type.as_str() {
            MEDIA_LAYER_TAR => Compression::None,
            MEDIA_LAYER_TAR_GZIP | MEDIA_DOCKER_LAYER => Compression::Gzip,
            other => return Err(ImageError::MediaType(other.into())),
        };
        let bytes = read_blob(root, d)?;
        if let Some(expected) = config.rootfs.diff_ids.get(i) {
            let actual = match compression {
                Compression::None => sha256_digest(&bytes),
                Compression::Gzip => {
                    let mut raw = Vec::new();
                    GzDecoder::new(&bytes[..])
                        .read_to_end(&mut raw)
                        .map_err(|e| ImageError::BadLayer { index: i, message: e.to_string() })?;
                    sha256_digest(&raw)
                }
            };
            if &actual != expected {
                return Err(ImageError::DiffIdMismatch {
                    index: i,
                    expected: expected.clone(),
                    actual: actual.trim_start_matches("sha256:").into(),
                });
            }
        }
        layers.push(Layer { bytes, compression });
    }
    Ok(Image { layers, config: config.config, id: manifest.config.digest })
}

/// Tars a directory tree (directories, regular files, symlinks, with their modes; owner
/// root) into an uncompressed layer, entries in sorted order.
pub fn tar_dir(root: &Path) -> Result<Vec<u8>, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let r = rel.join(&name);
            let full = root.join(&r);
            let md = fs::symlink_metadata(&full).map_err(io(format!("reading {}", full.display())))?;
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(md.mtime().max(0) as u64);
            h.set_mode(md.permissions().mode() & 0o7777);
            let ft = md.file_type();
            let what = format!("adding {}", full.display());
            if ft.is_symlink() {
                let target = fs::read_link(&full).map_err(io(format!("reading link {}", full.display())))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &r, &target).map_err(io(what))?;
            } else if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &r, std::io::empty()).map_err(io(what))?;
                subdirs.push(r);
            } else if ft.is_file() {
                let data = fs::read(&full).map_err(io(format!("reading {}", full.display())))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &r, &data[..]).map_err(io(what))?;
            }
            // Devices, sockets and FIFOs are left out.
        }
        // Depth first, in name order.
        subdirs.reverse();
        stack.extend(subdirs);
    }
    b.into_inner().map_err(io("finishing the tar"))
}

/// Gzips bytes.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).map_err(io("compressing a layer"))?;
    enc.finish().map_err(io("compressing a layer"))
}

/// One entry of a tar built in memory.
pub enum TarEntry<'a> {
    /// A directory with its mode.
    Dir(&'a str, u32),
    /// A regular file with its mode and content.
    File(&'a str, u32, &'a [u8]),
    /// A symlink and its target.
    Symlink(&'a str, &'a str),
}

/// Builds an uncompressed tar of `entries` (owner root, a fixed mtime).
pub fn tar_entries(entries: &[TarEntry<'_>]) -> Result<Vec<u8>, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match *e {
            TarEntry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).map_err(io(format!("adding {p}")))?;
            }
            TarEntry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data).map_err(io(format!("adding {p}")))?;
            }
            TarEntry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).map_err(io(format!("adding {p}")))?;
            }
        }
    }
    b.into_inner().map_err(io("finishing the tar"))
}

/// The uncompressed layer of the busybox image: `bin/busybox` (from `busybox`), applet
/// symlinks in `bin/`, `etc/passwd`, `etc/group`, `etc/hello.txt` ([`HELLO_TXT`]),
/// `tmp/` (1777), `root/`, `usr/bin/`.
pub fn busybox_layer(busybox: &[u8]) -> Result<Vec<u8>, ImageError> {
    let links: Vec<String> = BUSYBOX_APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![TarEntry::Dir("bin", 0o755), TarEntry::File("bin/busybox", 0o755, busybox)];
    entries.extend(links.iter().map(|l| TarEntry::Symlink(l, "busybox")));
    entries.extend([
        TarEntry::Dir("etc", 0o755),
        TarEntry::File("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n"),
        TarEntry::File("etc/group", 0o644, b"root:x:0:\n"),
        TarEntry::File("etc/hello.txt", 0o644, HELLO_TXT.as_bytes()),
        TarEntry::Dir("root", 0o700),
        TarEntry::Dir("tmp", 0o1777),
        TarEntry::Dir("usr", 0o755),
        TarEntry::Dir("usr/bin", 0o755),
    ]);
    tar_entries(&entries)
}

/// Stores `bytes` as a blob of the layout at `root` (creating `blobs/sha256/` when needed)
/// and returns its descriptor with `media_type`, no platform and no annotations.
pub fn write_blob(root: &Path, bytes: &[u8], media_type: &str) -> Result<Descriptor, ImageError> {
    let blobs = root.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
    let digest = sha256_digest(bytes);
    let path = blob_path(root, &digest)?;
    fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    })
}

/// Writes an OCI image layout at `out` with the given layers (uncompressed tars, stored
/// gzipped) and run config. Returns the manifest's digest.
pub fn write_layout(out: &Path, tars: &[Vec<u8>], run: RunConfig) -> Result<String, ImageError> {
    let put = |bytes: &[u8], media_type: &str| write_blob(out, bytes, media_type);
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        diff_ids.push(sha256_digest(t));
        layers.push(put(&gzip(t)?, MEDIA_LAYER_TAR_GZIP)?);
    }
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: run,
        rootfs: RootFs { kind: "layers".into(), diff_ids },
    };
    let config_d = put(&to_json(&config), MEDIA_CONFIG)?;
    let manifest =
        Manifest { schema_version: 2, media_type: Some(MEDIA_MANIFEST.into()), config: config_d, layers };
    let mut manifest_d = put(&to_json(&manifest), MEDIA_MANIFEST)?;
    manifest_d.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into() });
    manifest_d.annotations.insert("org.opencontainers.image.ref.name".into(), "latest".into());
    let digest = manifest_d.digest.clone();
    let index =
        Index { schema_version: 2, media_type: Some(MEDIA_INDEX.into()), manifests: vec![manifest_d] };
    fs::write(out.join("index.json"), to_json(&index)).map_err(io("writing index.json"))?;
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io("writing oci-layout"))?;
    Ok(digest)
}

/// One of the layout's documents as JSON. They are plain structs of strings, numbers and
/// maps, which always serialize.
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Makes `out` ready for a new layout: old blobs would linger in a reused directory, so
/// they are removed.
pub fn clear_layout(out: &Path) -> Result<(), ImageError> {
    let blobs = out.join("blobs");
    if blobs.exists() {
        fs::remove_dir_all(&blobs).map_err(io(format!("removing {}", blobs.display())))?;
    }
    Ok(())
}

/// Builds the busybox image at `out` from the static busybox binary `busybox`: config
/// `Env PATH=/bin:/usr/bin`, `WorkingDir /`, `Cmd ["sh"]`.
pub fn build_busybox_image(busybox: &Path, out: &Path) -> Result<String, ImageError> {
    build_busybox_image_with(busybox, &[], out)
}

/// Builds the busybox image at `out` as [`build_busybox_image`] does, with `more` (plain
/// tars, e.g. [`crate::rootfs::Rootfs::tar`]) as further layers above the busybox one:
/// the test images that add programs to busybox.
pub fn build_busybox_image_with(busybox: &Path, more: &[Vec<u8>], out: &Path) -> Result<String, ImageError> {
    let bin = fs::read(busybox).map_err(io(format!("reading {}", busybox.display())))?;
    let mut layers = vec![busybox_layer(&bin)?];
    layers.extend(more.iter().cloned());
    let run = RunConfig {
        entrypoint: None,
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin:/usr/bin".into()]),
        working_dir: Some("/".into()),
    };
    clear_layout(out)?;
    write_layout(out, &layers, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crx-oci-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(dir: &Path) -> String {
        let t = tar_entries(&[TarEntry::Dir("etc", 0o755), TarEntry::File("etc/x", 0o644, b"data")]).unwrap();
        let run = RunConfig {
            entrypoint: Some(vec!["/bin/e".into()]),
            cmd: Some(vec!["a".into(), "b".into()]),
            env: Some(vec!["PATH=/bin".into()]),
            working_dir: Some("/w".into()),
        };
        write_layout(dir, &[t], run).unwrap()
    }

    #[test]
    fn layouts_round_trip() {
        let d = tmp("rt");
        sample(&d);
        let img = Image::open(&d).unwrap();
        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.layers[0].compression, Compression::Gzip);
        assert_eq!(img.argv(&[]), ["/bin/e", "a", "b"]);
        assert_eq!(img.argv(&["x".into()]), ["x"]);
        assert_eq!(img.env(), ["PATH=/bin"]);
        assert_eq!(img.working_dir(), "/w");
        // The id is the config blob's digest.
        let config = fs::read(d.join("blobs/sha256").join(img.id.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(sha256_digest(&config), img.id);
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["rootfs"]["type"], "layers");
        let mut raw = Vec::new();
        GzDecoder::new(&img.layers[0].bytes[..]).read_to_end(&mut raw).unwrap();
        let mut ar = tar::Archive::new(&raw[..]);
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["etc", "etc/x"]);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(d.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["mediaType"], MEDIA_INDEX);
        assert_eq!(index["manifests"][0]["mediaType"], MEDIA_MANIFEST);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn plain_layers_are_the_inflated_tars() {
        let d = tmp("plain");
        sample(&d);
        let img = Image::open(&d).unwrap();
        let plain = img.with_plain_layers().unwrap();
        assert_eq!(plain.layers.len(), 1);
        assert_eq!(plain.layers[0].compression, Compression::None);
        let mut raw = Vec::new();
        GzDecoder::new(&img.layers[0].bytes[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(plain.layers[0].bytes, raw);
        assert_eq!((plain.id.as_str(), &plain.config), (img.id.as_str(), &img.config));
        // Plain layers stay as they are; a gzip layer that is not gzip says which it is.
        assert_eq!(plain.with_plain_layers().unwrap(), plain);
        let mut bad = img.clone();
        bad.layers.insert(0, Layer { bytes: b"plain".to_vec(), compression: Compression::None });
        bad.layers.push(Layer { bytes: b"not gzip".to_vec(), compression: Compression::Gzip });
        assert!(matches!(bad.with_plain_layers(), Err(ImageError::BadLayer { index: 2, .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_blobs_are_refused() {
        let d = tmp("corrupt");
        sample(&d);
        let img = Image::open(&d).unwrap();
        // Flip a byte of the layer blob.
        let digest = sha256_digest(&img.layers[0].bytes);
        let p = blob_path(&d, &digest).unwrap();
        let mut b = fs::read(&p).unwrap();
        b[20] ^= 0xff;
        fs::write(&p, &b).unwrap();
        assert!(matches!(Image::open(&d), Err(ImageError::DigestMismatch { .. })), "{:?}", Image::open(&d));
        // Truncate it.
        fs::write(&p, &b[..10]).unwrap();
        assert!(matches!(Image::open(&d), Err(ImageError::SizeMismatch { .. })));
        // Bad index JSON.
        fs::write(d.join("index.json"), b"{").unwrap();
        assert!(matches!(Image::open(&d), Err(ImageError::Json { .. })));
        fs::write(d.join("index.json"), br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert!(matches!(Image::open(&d), Err(ImageError::NoManifest)));
        let bad = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_MANIFEST}","digest":"sha256:../../etc","size":1}}]}}"#
        );
        fs::write(d.join("index.json"), bad).unwrap();
        assert!(matches!(Image::open(&d), Err(ImageError::BadDigest(_))));
        assert!(matches!(Image::open(&d.join("nope")), Err(ImageError::NotAnImage(_))));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rootfs_directories_become_one_tar_layer() {
        let d = tmp("rootfs");
        fs::create_dir_all(d.join("bin")).unwrap();
        fs::write(d.join("bin/tool"), b"#!").unwrap();
        fs::set_permissions(d.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("tool", d.join("bin/alias")).unwrap();
        fs::create_dir_all(d.join("tmp")).unwrap();
        fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        let img = Image::open(&d).unwrap();
        assert_eq!(img.layers[0].compression, Compression::None);
        assert_eq!(img.argv(&[]), Vec::<String>::new());
        assert_eq!(img.env(), [DEFAULT_PATH]);
        assert_eq!(img.id, sha256_digest(&img.layers[0].bytes));
        let mut ar = tar::Archive::new(&img.layers[0].bytes[..]);
        let mut seen = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            seen.insert(e.path().unwrap().display().to_string(), (h.mode().unwrap(), h.entry_type(), link));
        }
        assert_eq!(seen["bin/tool"].0, 0o755);
        assert_eq!(seen["bin/alias"].1, tar::EntryType::Symlink);
        assert_eq!(seen["bin/alias"].2.as_deref(), Some("tool"));
        assert_eq!(seen["tmp"].0, 0o1777);
        assert!(seen.contains_key("bin"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn busybox_layer_has_applets_and_files() {
        let t = busybox_layer(b"\x7fELF fake").unwrap();
        let mut ar = tar::Archive::new(&t[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            if p == "etc/hello.txt" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, HELLO_TXT);
            }
            if p == "tmp" {
                assert_eq!(e.header().mode().unwrap(), 0o1777);
            }
            names.push(p);
        }
        for want in ["bin/busybox", "bin/sh", "bin/echo", "etc/passwd", "tmp"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
    }
}
