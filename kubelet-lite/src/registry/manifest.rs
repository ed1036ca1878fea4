//! Manifests and indexes as a registry serves them (OCI image-spec `manifest.md`,
//! `image-index.md`, and Docker's v2 schema 2 and manifest list), and image configs
//! (`config.md`): parsed into checked types or refused with a [`PullError`].
//!
//! No-panic contract: [`parse_manifest`], [`choose_platform`] and [`parse_config`] accept any
//! bytes; a descriptor whose digest is not `sha256:` and 64 lowercase hex digits is refused
//! here, so nothing later builds a request path from an unchecked string.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;

use super::PullError;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The `Accept` header of a manifest request: every kind understood here.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// An uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A Docker layer (always gzip).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The only platform pulled.
pub const OS: &str = "linux";
/// The only architecture pulled.
pub const ARCHITECTURE: &str = "amd64";

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)))
}

/// A platform in an index entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A content descriptor: what a blob or a manifest is, its digest and its size.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A parsed manifest or index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An OCI index or a Docker manifest list: one manifest per platform.
    Index(Vec<Descriptor>),
    /// An image manifest: the config and the layers, bottom first.
    Manifest { config: Descriptor, layers: Vec<Descriptor> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// The media type of a `Content-Type` value, without parameters, lower-cased.
fn bare(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn check(d: &Descriptor) -> Result<(), PullError> {
    if valid_digest(&d.digest) {
        Ok(())
    } else {
        Err(PullError::BadDigest(d.digest.chars().take(80).collect()))
    }
}

/// Parses a manifest response: its kind by the response's `Content-Type` when that names a
/// manifest kind, else by the body's `mediaType`, else by its fields (as the OCI spec allows
/// for an image manifest or index without `mediaType`).
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, PullError> {
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| PullError::Json { what: "manifest", message: e.to_string() })?;
    let header =
        content_type.map(bare).filter(|t| !t.is_empty() && t != "application/json" && t != "text/plain");
    let kind = match (header, &raw.media_type) {
        (Some(h), _) => h,
        (None, Some(m)) => bare(m),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if raw.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(PullError::UnsupportedMediaType("(none)".to_string())),
    };
    if !matches!(kind.as_str(), OCI_INDEX | DOCKER_LIST | OCI_MANIFEST | DOCKER_MANIFEST) {
        return Err(PullError::UnsupportedMediaType(kind.chars().take(120).collect()));
    }
    if raw.schema_version != Some(2) {
        return Err(PullError::UnsupportedMediaType(match raw.schema_version {
            Some(v) => alloc::format!("{kind} with schemaVersion {v}"),
            None => alloc::format!("{kind} without schemaVersion"),
        }));
    }
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let manifests = raw.manifests.ok_or(PullError::Json {
                what: "manifest",
                message: "an index without \"manifests\"".to_string(),
            })?;
            manifests.iter().try_for_each(check)?;
            Ok(Parsed::Index(manifests))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
                return Err(PullError::Json {
                    what: "manifest",
                    message: "a manifest needs \"config\" and \"layers\"".to_string(),
                });
            };
            check(&config)?;
            layers.iter().try_for_each(check)?;
            Ok(Parsed::Manifest { config, layers })
        }
        other => Err(PullError::UnsupportedMediaType(other.chars().take(120).collect())),
    }
}

/// The index entry for linux/amd64 (an entry without a variant, or the first).
pub fn choose_platform(manifests: &[Descriptor]) -> Result<&Descriptor, PullError> {
    let ours =
        |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p.os == OS && p.architecture == ARCHITECTURE);
    let mut fits = manifests.iter().filter(ours);
    let first = fits.next().ok_or_else(|| {
        let offered: Vec<String> = manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| alloc::format!("{}/{}", p.os, p.architecture))
            .take(16)
            .collect();
        PullError::NoPlatform(offered.join(", "))
    })?;
    let plain = core::iter::once(first)
        .chain(fits)
        .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()));
    let chosen = plain.unwrap_or(first);
    if !matches!(chosen.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "") {
        return Err(PullError::UnsupportedMediaType(chosen.media_type.chars().take(120).collect()));
    }
    Ok(chosen)
}

/// How a layer's bytes are compressed, by its media type.
pub fn layer_kind(media_type: &str) -> Result<crx_abi::LayerKind, PullError> {
    match media_type {
        OCI_LAYER_TAR => Ok(crx_abi::LayerKind::Tar),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(crx_abi::LayerKind::TarGzip),
        other => Err(PullError::UnsupportedMediaType(other.chars().take(120).collect())),
    }
}

/// `config` of an image config: how its containers run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An image config, the parts the node uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// Parses an image config; one for another platform is refused.
pub fn parse_config(body: &[u8]) -> Result<Config, PullError> {
    let c: Config = serde_json::from_slice(body)
        .map_err(|e| PullError::Json { what: "image config", message: e.to_string() })?;
    if c.os != OS || c.architecture != ARCHITECTURE {
        return Err(PullError::WrongPlatform {
            os: c.os.chars().take(32).collect(),
            architecture: c.architecture.chars().take(32).collect(),
        });
    }
    if let Some(bad) = c.rootfs.diff_ids.iter().find(|d| !valid_digest(d)) {
        return Err(PullError::BadDigest(bad.chars().take(80).collect()));
    }
    Ok(c)
}
