//! Pulling an image from an OCI distribution registry (the v2 API): the manifest by tag or
//! digest, from an index or manifest list the linux/amd64 manifest, then the config and the
//! layers, every blob checked against its digest and size as it streams in and the config's
//! diff_ids against the uncompressed layers. Anonymous, bearer-token and basic
//! authentication.
//!
//! Sans-I/O like the rest of the crate: connections come from a [`Connector`] the host
//! supplies (TCP, TLS, or a fake in tests), over kubelet-lite's [`http::Client`].
//!
//! No-panic contract: every byte from a registry or a token server is an allegation.
//! [`pull`] returns an [`Image`] whose every byte was verified, or a [`PullError`]; it never
//! panics, and it holds no more than the caller's [`PullOptions::max_image_bytes`] of blobs
//! plus one manifest of at most [`PullOptions::max_manifest_bytes`]. Blobs go through a
//! [`BlobVerifier`] a read at a time, so a later step can hand them on as they arrive
//! instead of keeping them.

pub mod auth;
pub mod manifest;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use base64::Engine;
use crx_abi::pod::ImageConfig;
use crx_abi::LayerKind;
use sha2::{Digest, Sha256};

use crate::http::{self, AsyncStream, AsyncTransport, HttpError, Limits, Method, Request};
use crate::image::{Reference, DEFAULT_REGISTRY};
use auth::Challenge;
use manifest::{Descriptor, Parsed};

/// How a connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP: only for registries the user named insecure.
    Http,
    /// TLS.
    Https,
}

/// Opens connections for the puller: one per request.
pub trait Connector {
    /// The connection (a blocking [`http::Transport`] is one).
    type Conn: AsyncTransport;
    /// A connection to `host` (`name[:port]`; port 80 or 443 by `scheme` when it names
    /// none), not yet connected: the client calls [`Transport::connect`].
    fn open(&mut self, scheme: Scheme, host: &str) -> Result<Self::Conn, HttpError>;
}

/// What a pull may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullOptions {
    /// How to reach the registry.
    pub scheme: Scheme,
    /// Basic credentials `(user, password)`: sent to a token server that asks, or to the
    /// registry on a `Basic` challenge; never unasked.
    pub credentials: Option<(String, String)>,
    /// The most bytes the config and the layers (as stored, compressed) may add up to.
    pub max_image_bytes: u64,
    /// The most bytes of one manifest or index.
    pub max_manifest_bytes: usize,
    /// The most bytes the layers may add up to uncompressed (checked while the diff_ids are).
    pub max_unpacked_bytes: u64,
    /// The most layers an image may have (a pod VM's root filesystem takes at most
    /// `crx_abi::pod::bundle::MAX_LAYERS`).
    pub max_layers: usize,
    /// Keep each compressed layer uncompressed too ([`Layer::unpacked`]), from the same pass
    /// that checks its diff_id: for a node that inflates a layer once, at pull time.
    pub unpack: bool,
}

/// The bound on a manifest of the default options.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The bound on a token server's response and on a registry's error body.
const MAX_SMALL_BODY: usize = 64 * 1024;

impl PullOptions {
    /// Anonymous, over `scheme`, with at most `max_image_bytes` of blobs, 4 MiB manifests and
    /// four times the blobs' bound uncompressed.
    pub fn new(scheme: Scheme, max_image_bytes: u64) -> Self {
        PullOptions {
            scheme,
            credentials: None,
            max_image_bytes,
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            max_unpacked_bytes: max_image_bytes.saturating_mul(4),
            max_layers: crx_abi::pod::bundle::MAX_LAYERS,
            unpack: false,
        }
    }
}

/// One layer, as the registry stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:...` of `bytes`.
    pub digest: String,
    /// The manifest's media type for it.
    pub media_type: String,
    /// How `bytes` are compressed.
    pub kind: LayerKind,
    /// The layer, verified (empty for a compressed layer kept unpacked: the tar is what
    /// is used, and the compressed bytes are let go as soon as it is checked).
    pub bytes: Vec<u8>,
    /// Bytes of the layer as the registry stores it.
    pub size: u64,
    /// With [`PullOptions::unpack`], a compressed layer's tar (its sha256 is the diff_id).
    pub unpacked: Option<Vec<u8>>,
}

impl Layer {
    /// The layer's tar: [`Layer::unpacked`] when it was compressed and unpacked, else the
    /// bytes of a plain tar layer; `None` for a compressed layer that was not unpacked.
    pub fn tar(&self) -> Option<&[u8]> {
        match (self.kind, &self.unpacked) {
            (LayerKind::Tar, _) => Some(&self.bytes),
            (LayerKind::TarGzip, Some(u)) => Some(u),
            (LayerKind::TarGzip, None) => None,
        }
    }
}

/// A pulled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The digest of the image manifest (for an index, of the chosen platform's manifest).
    pub manifest_digest: String,
    /// The image description: the reference it was pulled by (normalised), the config's
    /// digest as its id, Entrypoint, Cmd, Env and WorkingDir.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// Bytes of the config blob.
    pub config_size: u64,
}

impl Image {
    /// Bytes of the config and the layers, as the registry stores them.
    pub fn size_bytes(&self) -> u64 {
        self.layers.iter().fold(self.config_size, |sum, l| sum.saturating_add(l.size))
    }

    /// `REPOSITORY@sha256:MANIFEST` (`docker.io/library/busybox@sha256:...`): the imageID
    /// of the pulled image, and the name its digest answers to.
    pub fn repo_digest(&self) -> String {
        let name = self.config.names.first().map(String::as_str).unwrap_or_default();
        let repo = match Reference::parse(name) {
            Ok(r) => r.name(),
            Err(_) => name.to_string(),
        };
        format!("{repo}@{}", self.manifest_digest)
    }

    /// What the node reports about it: its names (the reference it was pulled by, and its
    /// repository digest), the repository digest as its id, and its size.
    pub fn info(&self) -> crate::runtime::ImageInfo {
        let digest = self.repo_digest();
        let mut names = self.config.names.clone();
        if !names.contains(&digest) {
            names.push(digest.clone());
        }
        crate::runtime::ImageInfo { names, id: digest, size_bytes: self.size_bytes() }
    }
}

/// How the node reaches `registry` (as an image reference names it): plain HTTP only when the
/// node's configuration lists it among its insecure registries (as containerd's does), TLS
/// otherwise.
pub fn scheme_for(registry: &str, insecure: &[String]) -> Scheme {
    if insecure.iter().any(|i| i == registry) {
        Scheme::Http
    } else {
        Scheme::Https
    }
}

/// Why a pull failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullError {
    /// No connection to a server could be made or kept.
    Unreachable { host: String, message: String },
    /// The exchange broke off or was not HTTP.
    Http { what: String, error: HttpError },
    /// 404: the repository, the tag or the blob is not there.
    NotFound { what: String, code: Option<String> },
    /// 401 after every way of authenticating that was offered.
    Unauthorized { what: String, code: Option<String> },
    /// 403.
    Denied { what: String, code: Option<String> },
    /// Another status than 200.
    Status { what: String, status: u16, code: Option<String> },
    /// A blob or manifest does not hash to the digest it was asked for.
    DigestMismatch { digest: String, actual: String },
    /// A blob or manifest is not the size its descriptor gives.
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    /// A manifest, config or layer kind this node cannot use.
    UnsupportedMediaType(String),
    /// An index without a linux/amd64 image (the platforms it has).
    NoPlatform(String),
    /// The config is for another platform.
    WrongPlatform { os: String, architecture: String },
    /// The image's blobs exceed the caller's limit.
    TooLarge { limit_bytes: u64, needed_bytes: u64 },
    /// A manifest exceeds its bound.
    ManifestTooLarge { limit_bytes: usize },
    /// A layer exceeds the bound on unpacked bytes.
    UnpackedTooLarge { limit_bytes: u64 },
    /// JSON that is not what it should be.
    Json { what: &'static str, message: String },
    /// A digest in a manifest or config that is not `sha256:` and 64 hex digits.
    BadDigest(String),
    /// A `WWW-Authenticate` header that cannot be followed.
    BadChallenge(String),
    /// A token realm over plain HTTP for a registry spoken to over TLS.
    InsecureRealm(String),
    /// The uncompressed layer does not hash to the config's diff_id.
    DiffIdMismatch { layer: String, expected: String, actual: String },
    /// The number of diff_ids is not the number of layers.
    DiffIdCount { layers: usize, diff_ids: usize },
    /// A gzip layer does not decompress.
    Gzip { layer: String, message: String },
    /// The node has no memory left to hold this many bytes of the image.
    OutOfMemory { bytes: u64 },
    /// More layers than a pod VM takes.
    TooManyLayers { layers: usize, limit: usize },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PullError::Unreachable { host, message } => write!(f, "registry {host} unreachable: {message}"),
            PullError::Http { what, error } => write!(f, "fetching {what}: {error}"),
            PullError::NotFound { what, code } => write!(f, "{what} not found{}", code_suffix(code)),
            PullError::Unauthorized { what, code } => {
                write!(f, "{what}: 401 unauthorized{}", code_suffix(code))
            }
            PullError::Denied { what, code } => write!(f, "{what}: 403 denied{}", code_suffix(code)),
            PullError::Status { what, status, code } => {
                write!(f, "{what}: unexpected status {status}{}", code_suffix(code))
            }
            PullError::DigestMismatch { digest, actual } => {
                write!(f, "digest mismatch: {digest} has content hashing to {actual}")
            }
            PullError::SizeMismatch { digest, expected, actual } => {
                write!(f, "size mismatch: {digest} is {actual} bytes, its descriptor says {expected}")
            }
            PullError::UnsupportedMediaType(t) => write!(f, "unsupported media type {t}"),
            PullError::NoPlatform(offered) => {
                write!(f, "no linux/amd64 image in the index (it has: {offered})")
            }
            PullError::WrongPlatform { os, architecture } => {
                write!(f, "the image is for {os}/{architecture}, not linux/amd64")
            }
            PullError::TooLarge { limit_bytes, needed_bytes } => {
                write!(f, "the image is {needed_bytes} bytes, over the limit of {limit_bytes}")
            }
            PullError::ManifestTooLarge { limit_bytes } => {
                write!(f, "a manifest or token reply larger than {limit_bytes} bytes")
            }
            PullError::UnpackedTooLarge { limit_bytes } => {
                write!(f, "the layers unpack to more than {limit_bytes} bytes")
            }
            PullError::Json { what, message } => write!(f, "malformed {what}: {message}"),
            PullError::BadDigest(d) => write!(f, "invalid digest {d:?} (only sha256 is supported)"),
            PullError::BadChallenge(m) => write!(f, "unusable authentication challenge: {m}"),
            PullError::InsecureRealm(r) => {
                write!(f, "token realm {r} is plain HTTP for a registry reached over TLS")
            }
            PullError::DiffIdMismatch { layer, expected, actual } => {
                write!(f, "layer {layer} unpacks to {actual}, the config's diff_id is {expected}")
            }
            PullError::DiffIdCount { layers, diff_ids } => {
                write!(f, "the manifest has {layers} layers but the config {diff_ids} diff_ids")
            }
            PullError::Gzip { layer, message } => write!(f, "layer {layer}: {message}"),
            PullError::TooManyLayers { layers, limit } => {
                write!(f, "the image has {layers} layers, more than the {limit} a pod VM takes")
            }
            PullError::OutOfMemory { bytes } => {
                write!(f, "the node has no memory left to hold {bytes} bytes of the image")
            }
        }
    }
}

fn hex_digest(hash: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 2 * hash.len());
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

/// Checks a blob as it streams in: its size never past the descriptor's, its sha256 at the
/// end. The bytes are kept; a streaming consumer would pass them on instead.
#[derive(Clone, Debug)]
pub struct BlobVerifier {
    digest: String,
    size: u64,
    hasher: Sha256,
    bytes: Vec<u8>,
}

impl BlobVerifier {
    /// A verifier for the blob `digest` of `size` bytes.
    pub fn new(digest: &str, size: u64) -> Self {
        BlobVerifier { digest: digest.to_string(), size, hasher: Sha256::new(), bytes: Vec::new() }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The next bytes; more than the descriptor's size is an error at once.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), PullError> {
        let after = self.received().saturating_add(chunk.len() as u64);
        if after > self.size {
            return Err(PullError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: after,
            });
        }
        if self.bytes.try_reserve(chunk.len()).is_err() {
            return Err(PullError::OutOfMemory { bytes: after });
        }
        self.hasher.update(chunk);
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The end of the blob: the bytes, if they are the size and hash they should be.
    pub fn finish(self) -> Result<Vec<u8>, PullError> {
        if self.received() != self.size {
            return Err(PullError::SizeMismatch {
                digest: self.digest,
                expected: self.size,
                actual: self.bytes.len() as u64,
            });
        }
        let actual = hex_digest(&self.hasher.finalize());
        if actual != self.digest {
            return Err(PullError::DigestMismatch { digest: self.digest, actual });
        }
        Ok(self.bytes)
    }
}

/// The registry's API host for a reference's registry (Docker Hub's is not `docker.io`).
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Basic(String),
    Bearer(String),
}

/// What a successful exchange returns besides the body.
struct Head {
    content_type: Option<String>,
    docker_digest: Option<String>,
}

/// Where a body goes.
enum Sink<'a> {
    /// A small body, up to the given bound (manifests, tokens).
    Bounded(&'a mut Vec<u8>, usize),
    /// A blob, verified.
    Blob(&'a mut BlobVerifier),
}

struct Session<'c, C: Connector> {
    connector: &'c mut C,
    opts: &'c PullOptions,
    host: String,
    repository: String,
    auth: Auth,
}

/// The first error code of a registry's error body (`{"errors":[{"code":"..."}]}`).
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct E {
        code: String,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    let es: Es = serde_json::from_slice(body).ok()?;
    let code = es.errors.into_iter().next()?.code;
    code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then(|| code.chars().take(64).collect())
}

/// A body past its sink's bound.
fn too_large(sink: &Sink<'_>) -> PullError {
    match sink {
        Sink::Bounded(_, limit) => PullError::ManifestTooLarge { limit_bytes: *limit },
        Sink::Blob(v) => PullError::SizeMismatch {
            digest: v.digest.clone(),
            expected: v.size,
            actual: v.received().saturating_add(1),
        },
    }
}

impl<C: Connector> Session<'_, C> {
    fn http_error(&self, host: &str, what: &str, error: HttpError) -> PullError {
        match error {
            HttpError::Transport(message) => PullError::Unreachable { host: host.to_string(), message },
            error => PullError::Http { what: what.to_string(), error },
        }
    }

    /// One GET to `host` over `scheme`, its body into `sink`. Returns the status, the head
    /// and (for a status other than 200) the error body.
    async fn exchange(
        &mut self,
        scheme: Scheme,
        host: &str,
        req: &Request,
        what: &str,
        sink: &mut Sink<'_>,
    ) -> Result<(u16, Head, Option<String>, Vec<u8>), PullError> {
        let mut conn = self.connector.open(scheme, host).map_err(|e| self.http_error(host, what, e))?;
        let max_body_bytes = match sink {
            Sink::Bounded(_, max) => *max,
            Sink::Blob(v) => usize::try_from(v.size).unwrap_or(usize::MAX),
        };
        let limits = Limits { max_body_bytes: max_body_bytes.max(MAX_SMALL_BODY), ..Limits::default() };
        let mut stream = match AsyncStream::open(&mut conn, host, None, req, limits).await {
            Ok(stream) => stream,
            Err(HttpError::BodyTooLarge) => return Err(too_large(sink)),
            // Closed before a byte of an answer: nothing listens behind the connection (a
            // forward or proxy whose far end is down).
            Err(HttpError::NoAnswer) => {
                return Err(PullError::Unreachable {
                    host: host.to_string(),
                    message: HttpError::NoAnswer.to_string(),
                })
            }
            Err(e) => return Err(self.http_error(host, what, e)),
        };
        let status = stream.status;
        let head = Head {
            content_type: stream.header("content-type").map(str::to_string),
            docker_digest: stream.header("docker-content-digest").map(str::to_string),
        };
        let challenge = stream.header("www-authenticate").map(str::to_string);
        if status != 200 {
            let mut body = Vec::new();
            while let Ok(Some(b)) = stream.next_bytes().await {
                body.extend_from_slice(&b);
                if body.len() > MAX_SMALL_BODY {
                    break;
                }
            }
            return Ok((status, head, challenge, body));
        }
        if let Sink::Blob(v) = sink {
            let length = stream.header("content-length").map(|l| l.parse::<u64>());
            if let Some(Ok(length)) = length {
                if length != v.size {
                    return Err(PullError::SizeMismatch {
                        digest: v.digest.clone(),
                        expected: v.size,
                        actual: length,
                    });
                }
            }
        }
        loop {
            let chunk = match stream.next_bytes().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(HttpError::BodyTooLarge) => return Err(too_large(sink)),
                Err(e) => return Err(self.http_error(host, what, e)),
            };
            match sink {
                Sink::Bounded(buf, limit) => {
                    if buf.len().saturating_add(chunk.len()) > *limit {
                        return Err(PullError::ManifestTooLarge { limit_bytes: *limit });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Sink::Blob(v) => v.push(&chunk)?,
            }
        }
        Ok((status, head, challenge, Vec::new()))
    }

    fn authorization(&self) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic(b) => Some(format!("Basic {b}")),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }

    fn basic(&self) -> Option<String> {
        self.opts
            .credentials
            .as_ref()
            .map(|(u, p)| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    }

    /// Answers a challenge: a token from the realm, or the basic credentials. `false` when
    /// there is nothing new to try.
    async fn authenticate(&mut self, challenge: Option<&str>) -> Result<bool, PullError> {
        let Some(challenge) = challenge else { return Ok(false) };
        match auth::parse_challenge(challenge)? {
            Challenge::Basic => match self.basic() {
                Some(b) if !matches!(self.auth, Auth::Basic(_)) => {
                    self.auth = Auth::Basic(b);
                    Ok(true)
                }
                _ => Ok(false),
            },
            Challenge::Bearer { realm, service, scope } => {
                if matches!(self.auth, Auth::Bearer(_)) {
                    return Ok(false);
                }
                let url = auth::parse_realm(&realm, self.opts.scheme)?;
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut path = url.path.clone();
                let mut sep = if path.contains('?') { '&' } else { '?' };
                for (k, v) in [("service", service.as_deref()), ("scope", Some(scope.as_str()))] {
                    if let Some(v) = v {
                        path.push_str(&format!("{sep}{k}={}", http::encode_query(v)));
                        sep = '&';
                    }
                }
                let mut req = Request::new(Method::Get, path);
                if let Some(b) = self.basic() {
                    req = req.with_header("Authorization", &format!("Basic {b}"));
                }
                let mut body = Vec::new();
                let what = format!("a token from {}", url.host);
                let (status, _, _, err) = self
                    .exchange(
                        url.scheme,
                        &url.host,
                        &req,
                        &what,
                        &mut Sink::Bounded(&mut body, MAX_SMALL_BODY),
                    )
                    .await?;
                match status {
                    200 => {}
                    401 => return Err(PullError::Unauthorized { what, code: error_code(&err) }),
                    403 => return Err(PullError::Denied { what, code: error_code(&err) }),
                    status => return Err(PullError::Status { what, status, code: error_code(&err) }),
                }
                self.auth = Auth::Bearer(auth::parse_token(&body)?);
                Ok(true)
            }
        }
    }

    /// A GET to the registry, answering at most two challenges (a basic one may lead to a
    /// token, as a token server may ask for credentials).
    async fn get(
        &mut self,
        path: String,
        accept: Option<&str>,
        what: &str,
        sink: &mut Sink<'_>,
    ) -> Result<Head, PullError> {
        let host = self.host.clone();
        for _ in 0..3 {
            let mut req = Request::new(Method::Get, path.clone());
            if let Some(a) = accept {
                req = req.with_header("Accept", a);
            }
            if let Some(a) = self.authorization() {
                req = req.with_header("Authorization", &a);
            }
            let (status, head, challenge, err) =
                self.exchange(self.opts.scheme, &host, &req, what, sink).await?;
            let code = error_code(&err);
            match status {
                200 => return Ok(head),
                401 => {
                    if !self.authenticate(challenge.as_deref()).await? {
                        return Err(PullError::Unauthorized { what: what.to_string(), code });
                    }
                }
                403 => return Err(PullError::Denied { what: what.to_string(), code }),
                404 => return Err(PullError::NotFound { what: what.to_string(), code }),
                status => return Err(PullError::Status { what: what.to_string(), status, code }),
            }
        }
        Err(PullError::Unauthorized { what: what.to_string(), code: None })
    }

    /// A manifest by tag or digest; `expect` is its descriptor when known. Returns its
    /// digest, the parse and the bytes.
    async fn manifest(
        &mut self,
        reference: &str,
        expect: Option<&Descriptor>,
    ) -> Result<(String, Parsed), PullError> {
        let limit = self.opts.max_manifest_bytes;
        if let Some(d) = expect {
            if d.size > limit as u64 {
                return Err(PullError::ManifestTooLarge { limit_bytes: limit });
            }
        }
        let mut body = Vec::new();
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let what = format!("manifest {}:{reference}", self.repository);
        let head = self
            .get(path, Some(manifest::MANIFEST_ACCEPT), &what, &mut Sink::Bounded(&mut body, limit))
            .await?;
        let digest = sha256_digest(&body);
        let wanted =
            expect.map(|d| d.digest.as_str()).or(manifest::valid_digest(reference).then_some(reference));
        if let Some(w) = wanted {
            if digest != w {
                return Err(PullError::DigestMismatch { digest: w.to_string(), actual: digest });
            }
        } else if let Some(d) = head.docker_digest.as_deref().filter(|d| manifest::valid_digest(d)) {
            if d != digest {
                return Err(PullError::DigestMismatch { digest: d.to_string(), actual: digest });
            }
        }
        if let Some(d) = expect {
            if d.size != body.len() as u64 {
                return Err(PullError::SizeMismatch { digest, expected: d.size, actual: body.len() as u64 });
            }
        }
        let parsed = manifest::parse_manifest(head.content_type.as_deref(), &body)?;
        Ok((digest, parsed))
    }

    async fn blob(&mut self, d: &Descriptor) -> Result<Vec<u8>, PullError> {
        let mut v = BlobVerifier::new(&d.digest, d.size);
        let path = format!("/v2/{}/blobs/{}", self.repository, d.digest);
        let what = format!("blob {}", d.digest);
        self.get(path, None, &what, &mut Sink::Blob(&mut v)).await?;
        v.finish()
    }
}

/// The sha256 of a layer uncompressed, within `budget` bytes (decreased by what it unpacks
/// to); with `keep`, the uncompressed bytes of a compressed layer too.
fn diff_id(
    layer: &Layer,
    budget: &mut u64,
    limit_bytes: u64,
    keep: bool,
) -> Result<(String, Option<Vec<u8>>), PullError> {
    match layer.kind {
        LayerKind::Tar => {
            *budget = budget
                .checked_sub(layer.bytes.len() as u64)
                .ok_or(PullError::UnpackedTooLarge { limit_bytes })?;
            Ok((sha256_digest(&layer.bytes), None))
        }
        LayerKind::TarGzip => {
            let mut h = Sha256::new();
            let mut kept = keep.then(Vec::new);
            let mut out_of_memory = false;
            let cap = usize::try_from(*budget).unwrap_or(usize::MAX);
            let sink = |c: &[u8]| {
                h.update(c);
                if let Some(k) = kept.as_mut() {
                    if k.try_reserve(c.len()).is_ok() {
                        k.extend_from_slice(c);
                    } else {
                        out_of_memory = true;
                    }
                }
            };
            let n = crx_fs::gzip::gunzip_chunks(&layer.bytes, cap, sink).map_err(|e| match e {
                crx_fs::gzip::GzipError::TooLarge { .. } => PullError::UnpackedTooLarge { limit_bytes },
                e => PullError::Gzip { layer: layer.digest.clone(), message: e.to_string() },
            })?;
            if out_of_memory {
                return Err(PullError::OutOfMemory { bytes: n as u64 });
            }
            *budget = budget.saturating_sub(n as u64);
            Ok((hex_digest(&h.finalize()), kept))
        }
    }
}

/// Pulls `reference` through `connector` whose connections never wait (blocking
/// [`http::Transport`]s): see the module doc.
pub fn pull<C: Connector>(
    connector: &mut C,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Image, PullError> {
    http::block_on(pull_async(connector, reference, opts))
}

/// Pulls `reference` through `connector`, waiting as its connections do: a runtime without
/// threads polls the future between its other work.
pub async fn pull_async<C: Connector>(
    connector: &mut C,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Image, PullError> {
    let (mut s, resolved) = resolve(connector, reference, opts).await?;
    let mut out = Vec::with_capacity(resolved.layers.len());
    let mut budget = opts.max_unpacked_bytes;
    for ((d, kind), expected) in resolved.layers.iter().zip(&resolved.kinds).zip(&resolved.diff_ids) {
        let bytes = s.blob(d).await?;
        let mut layer = Layer {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            kind: *kind,
            bytes,
            size: d.size,
            unpacked: None,
        };
        let (actual, unpacked) = diff_id(&layer, &mut budget, opts.max_unpacked_bytes, opts.unpack)?;
        if unpacked.is_some() {
            layer.bytes = Vec::new();
        }
        layer.unpacked = unpacked;
        if &actual != expected {
            return Err(PullError::DiffIdMismatch {
                layer: layer.digest,
                expected: expected.clone(),
                actual,
            });
        }
        out.push(layer);
    }
    Ok(resolved.image(reference, out))
}

/// Where a node keeps the layers it pulls: each layer's tar written as it is inflated, and
/// what it already holds, so that a layer is neither fetched nor inflated twice.
pub trait LayerStore {
    /// What a stored layer is to the node.
    type Stored;
    /// The layer already held for blob `digest`, if its tar hashes to `diff_id`.
    fn reuse(&mut self, digest: &str, diff_id: &str) -> Option<Self::Stored>;
    /// Starts the tar of blob `digest`: `len_hint` bytes, as a plain tar's size or a gzip
    /// trailer says (an allegation: the bytes written are what counts).
    fn begin(&mut self, digest: &str, len_hint: u64) -> Result<(), PullError>;
    /// The tar's next bytes.
    fn write(&mut self, chunk: &[u8]) -> Result<(), PullError>;
    /// The tar is whole and hashes to `diff_id`: keep it.
    fn finish(&mut self, diff_id: &str) -> Result<Self::Stored, PullError>;
    /// The tar failed a check or the pull ended: let go of what was written.
    fn abort(&mut self);
}

/// The size a gzip member says it inflates to (its trailer's ISIZE, modulo 2^32).
fn gzip_isize(gz: &[u8]) -> Option<u64> {
    let tail: [u8; 4] = gz.get(gz.len().checked_sub(4)?..)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(tail)))
}

/// Inflates (or copies) one verified blob into `store`, checking its diff_id; `budget` is
/// what the layers may still unpack to.
fn store_layer<S: LayerStore>(
    store: &mut S,
    d: &Descriptor,
    kind: LayerKind,
    bytes: &[u8],
    expected: &str,
    budget: &mut u64,
    limit_bytes: u64,
) -> Result<S::Stored, PullError> {
    let mut h = Sha256::new();
    let written = match kind {
        LayerKind::Tar => {
            *budget =
                budget.checked_sub(bytes.len() as u64).ok_or(PullError::UnpackedTooLarge { limit_bytes })?;
            store.begin(&d.digest, bytes.len() as u64)?;
            h.update(bytes);
            store.write(bytes)
        }
        LayerKind::TarGzip => {
            store.begin(&d.digest, gzip_isize(bytes).unwrap_or(0))?;
            let mut failed = None;
            let cap = usize::try_from(*budget).unwrap_or(usize::MAX);
            let sink = |c: &[u8]| {
                h.update(c);
                if failed.is_none() {
                    failed = store.write(c).err();
                }
            };
            match crx_fs::gzip::gunzip_chunks(bytes, cap, sink) {
                Ok(n) => {
                    *budget = budget.saturating_sub(n as u64);
                    failed.map_or(Ok(()), Err)
                }
                Err(crx_fs::gzip::GzipError::TooLarge { .. }) => {
                    Err(PullError::UnpackedTooLarge { limit_bytes })
                }
                Err(e) => Err(PullError::Gzip { layer: d.digest.clone(), message: e.to_string() }),
            }
        }
    };
    let actual = hex_digest(&h.finalize());
    match written {
        Err(e) => {
            store.abort();
            Err(e)
        }
        Ok(()) if actual != expected => {
            store.abort();
            Err(PullError::DiffIdMismatch { layer: d.digest.clone(), expected: expected.to_string(), actual })
        }
        Ok(()) => store.finish(expected).inspect_err(|_| store.abort()),
    }
}

/// Pulls `reference` as [`pull_async`] does, each layer's tar going into `store` as it is
/// inflated (a layer `store` already holds is neither fetched nor inflated), so at most one
/// compressed layer is held in memory at a time. The image's layers come back without bytes;
/// the stored layers, in order, beside them.
pub async fn pull_into<C: Connector, S: LayerStore>(
    connector: &mut C,
    reference: &Reference,
    opts: &PullOptions,
    store: &mut S,
) -> Result<(Image, Vec<S::Stored>), PullError> {
    let (mut s, resolved) = resolve(connector, reference, opts).await?;
    let mut out = Vec::with_capacity(resolved.layers.len());
    let mut stored = Vec::with_capacity(resolved.layers.len());
    let mut budget = opts.max_unpacked_bytes;
    for ((d, kind), expected) in resolved.layers.iter().zip(&resolved.kinds).zip(&resolved.diff_ids) {
        let held = match store.reuse(&d.digest, expected) {
            Some(held) => held,
            None => {
                let bytes = s.blob(d).await?;
                store_layer(store, d, *kind, &bytes, expected, &mut budget, opts.max_unpacked_bytes)?
            }
        };
        stored.push(held);
        out.push(Layer {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            kind: *kind,
            bytes: Vec::new(),
            size: d.size,
            unpacked: None,
        });
    }
    Ok((resolved.image(reference, out), stored))
}

/// What a pull learns before its layers: the manifest, the config, the layers to fetch.
struct Resolved {
    manifest_digest: String,
    config: Descriptor,
    run: manifest::RunConfig,
    layers: Vec<Descriptor>,
    kinds: Vec<LayerKind>,
    diff_ids: Vec<String>,
}

impl Resolved {
    fn image(self, reference: &Reference, layers: Vec<Layer>) -> Image {
        let run = self.run;
        Image {
            manifest_digest: self.manifest_digest,
            config: ImageConfig {
                names: alloc::vec![reference.to_string()],
                id: self.config.digest.clone(),
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                env: run.env.unwrap_or_default(),
                working_dir: run.working_dir.unwrap_or_default(),
            },
            layers,
            config_size: self.config.size,
        }
    }
}

/// The manifest (through an index to the linux/amd64 one), its checks, and the config.
async fn resolve<'c, C: Connector>(
    connector: &'c mut C,
    reference: &Reference,
    opts: &'c PullOptions,
) -> Result<(Session<'c, C>, Resolved), PullError> {
    let mut s = Session {
        connector,
        opts,
        host: api_host(&reference.registry).to_string(),
        repository: reference.repository.clone(),
        auth: Auth::None,
    };
    let first = reference.digest.as_deref().or(reference.tag.as_deref()).unwrap_or(crate::image::DEFAULT_TAG);
    let (mut manifest_digest, mut parsed) = s.manifest(first, None).await?;
    if let Parsed::Index(manifests) = &parsed {
        let chosen = manifest::choose_platform(manifests)?.clone();
        (manifest_digest, parsed) = s.manifest(&chosen.digest, Some(&chosen)).await?;
    }
    let Parsed::Manifest { config, layers } = parsed else {
        return Err(PullError::UnsupportedMediaType("an index inside an index".to_string()));
    };
    if !matches!(config.media_type.as_str(), manifest::OCI_CONFIG | manifest::DOCKER_CONFIG) {
        return Err(PullError::UnsupportedMediaType(config.media_type.chars().take(120).collect()));
    }
    if layers.len() > opts.max_layers {
        return Err(PullError::TooManyLayers { layers: layers.len(), limit: opts.max_layers });
    }
    let kinds = layers.iter().map(|l| manifest::layer_kind(&l.media_type)).collect::<Result<Vec<_>, _>>()?;
    let needed_bytes = layers.iter().fold(config.size, |sum, l| sum.saturating_add(l.size));
    if needed_bytes > opts.max_image_bytes {
        return Err(PullError::TooLarge { limit_bytes: opts.max_image_bytes, needed_bytes });
    }
    let config_bytes = s.blob(&config).await?;
    let c = manifest::parse_config(&config_bytes)?;
    if c.rootfs.diff_ids.len() != layers.len() {
        return Err(PullError::DiffIdCount { layers: layers.len(), diff_ids: c.rootfs.diff_ids.len() });
    }
    let run = c.config.unwrap_or_default();
    Ok((s, Resolved { manifest_digest, config, run, layers, kinds, diff_ids: c.rootfs.diff_ids }))
}

#[cfg(test)]
mod tests;
