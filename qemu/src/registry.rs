//! A real OCI registry for the runner and its tests: Debian's `docker-registry` (the CNCF
//! distribution registry, 2.8) serving plain HTTP on 127.0.0.1, with images pushed to it
//! from OCI image layouts by `skopeo`.
//!
//! [`Registry::start`] writes the registry's `config.yml` into a directory of its own
//! (storage under `storage/`, output in `registry.log`, and with a password an `htpasswd`
//! file in bcrypt, the only hash the registry takes), starts `docker-registry serve` in a
//! process group of its own, registered with [`crate::reaper`], and waits until `GET /v2/`
//! answers. [`Registry::push`] copies a layout as an OCI or a Docker schema 2 image,
//! [`Registry::push_index`] makes a two-platform OCI image index whose first entry is the
//! wrong platform for this machine, and [`Registry::blob_path`] names the file that holds a
//! blob so a test can damage it.
//!
//! What the programs do, as found with distribution 2.8.2 and skopeo 1.9.3:
//! - `docker-registry` cannot listen on port 0, so a free port is chosen first.
//! - It answers a manifest request by the media type it stored: an OCI manifest comes back
//!   only to a request whose `Accept` names the OCI type (others get 404
//!   `MANIFEST_UNKNOWN`), and its `Docker-Content-Digest` header is the sha256 of the bytes
//!   it serves, which are the bytes that were pushed.
//! - `skopeo copy` keeps an OCI layout's manifest as it is unless told `--format v2s2`, which
//!   rewrites the manifest, the config's and the layers' media types (the blobs stay the
//!   same). `--preserve-digests` is meant to refuse a rewrite, but together with
//!   `--format v2s2` the push succeeds and stores the OCI manifest unchanged, so it is only
//!   given for OCI pushes (where it keeps the layout's digest).
//! - `skopeo copy --all` takes an image index only as the one entry of the layout's
//!   `index.json`: a top-level `index.json` that lists two manifests is refused with "more
//!   than one image in oci, choose an image". Given the nested index, it copies every
//!   manifest and then the index, byte for byte.

use crate::cluster::{free_ports, tail_file};
use crate::oci::{
    self, Descriptor, ImageConfig, ImageError, Index, Manifest, Platform, RootFs, TarEntry, MEDIA_CONFIG,
    MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_LAYER_TAR_GZIP, MEDIA_MANIFEST,
};
use crate::reaper::Registration;
use crate::Error;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long the registry may take to answer `GET /v2/` after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the registry has to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one skopeo run may take before it is killed.
pub const SKOPEO_TIMEOUT: Duration = Duration::from_secs(60);
/// The realm of the registry's basic authentication.
pub const REALM: &str = "crx-test-registry";
/// The content of `etc/hello.txt` in the made-up linux/arm64 image of [`Registry::push_index`].
pub const ARM64_HELLO_TXT: &str = "this is the linux/arm64 image of the index\n";
/// Every manifest media type, for the `Accept` of a manifest request.
pub const MANIFEST_TYPES: &[&str] =
    &[MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, kubelet_lite::registry::manifest::DOCKER_LIST];
/// How many lines of a log an error shows.
const TAIL_LINES: usize = 30;
/// The largest HTTP reply [`http_get`] reads.
const MAX_REPLY: u64 = 256 << 20;

/// The manifest format a push stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image manifest, as the layout has it (`application/vnd.oci.image.manifest.v1+json`).
    Oci,
    /// A Docker image manifest, schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
    DockerV2,
}

impl Format {
    /// The name skopeo's `--format` takes.
    fn skopeo_name(self) -> &'static str {
        match self {
            Format::Oci => "oci",
            Format::DockerV2 => "v2s2",
        }
    }
}

/// One HTTP reply: its status, its headers as sent, its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET path` over plain HTTP/1.0 to `addr` (`IP:PORT`) with the extra `headers`, and
/// reads the whole reply (the server closes the connection after it). Connecting may take
/// 2 s, each read or write 10 s.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    request(addr, path, headers, Duration::from_secs(10))
}

/// [`http_get`] with `timeout` for each read and write.
fn request(addr: &str, path: &str, headers: &[(&str, &str)], timeout: Duration) -> std::io::Result<Reply> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2).min(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut bytes = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut bytes)?;
    parse_reply(&bytes)
}

/// Splits a raw HTTP reply into status, headers and body (cut to `Content-Length`).
fn parse_reply(bytes: &[u8]) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(bytes.get(..end).unwrap_or_default());
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = bytes.get(end + 4..).unwrap_or_default().to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if let Some(length) = length {
        body.truncate(length);
    }
    Ok(Reply { status, headers, body })
}

/// `Authorization: Basic ...` for `user` and `password`.
fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A YAML double-quoted scalar holding `s` (a JSON string is one).
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The registry's `config.yml` for directory `dir`: storage in `dir/storage` (deletes
/// allowed), plain HTTP on 127.0.0.1:`port`, log level info, and with `auth` basic
/// authentication against `dir/htpasswd`.
fn config_text(dir: &Path, port: u16, auth: bool) -> String {
    let storage = dir.join("storage");
    let mut text = format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        yaml_string(&storage.to_string_lossy()),
    );
    if auth {
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
            yaml_string(REALM),
            yaml_string(&dir.join("htpasswd").to_string_lossy()),
        ));
    }
    text
}

/// The file under the storage root `storage` that holds the blob `digest` (`sha256:<hex>`
/// or bare hex).
fn blob_file(storage: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    storage.join("docker/registry/v2/blobs/sha256").join(hex.get(..2).unwrap_or(hex)).join(hex).join("data")
}

/// `REPO:TAG` split in two; a reference without a tag is `REPO:latest`.
fn split_ref(repo_tag: &str) -> Result<(&str, &str), Error> {
    let bad = || Error::Usage(format!("{repo_tag:?} is not a repository and tag (REPO:TAG)"));
    let (repo, tag) = match repo_tag.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (repo_tag, "latest"),
    };
    let fits = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b) || extra.contains(&b)
            })
    };
    if fits(repo, b"/") && fits(tag, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
        Ok((repo, tag))
    } else {
        Err(bad())
    }
}

/// `oci:PATH` for skopeo, which splits its argument at `:` (a reference may follow).
fn oci_source(layout: &Path) -> Result<String, Error> {
    let path = layout.to_str().filter(|p| !p.contains(':')).ok_or_else(|| {
        Error::Usage(format!("{}: skopeo takes only UTF-8 layout paths without ':'", layout.display()))
    })?;
    Ok(format!("oci:{path}"))
}

/// A `docker-registry` child serving plain HTTP on 127.0.0.1, with its directory; stopped
/// when dropped.
pub struct Registry {
    dir: PathBuf,
    port: u16,
    auth: Option<(String, String)>,
    child: Option<Child>,
    group: Option<Registration>,
    /// Numbers the skopeo runs' log files.
    runs: AtomicU32,
}

impl Registry {
    /// Starts a registry whose configuration, storage, log and password file live in `dir`
    /// (created when missing; storage already there is served), on `port` or a free one,
    /// with basic authentication when `auth` gives a user and password. Returns once
    /// `GET /v2/` answers 200 (401 with authentication); the error of a registry that exits
    /// first or does not answer within [`READY_TIMEOUT`] ends with its log.
    pub fn start(dir: &Path, port: Option<u16>, auth: Option<(&str, &str)>) -> Result<Registry, Error> {
        crate::setup::ensure_present(crate::setup::REGISTRY)?;
        fs::create_dir_all(dir.join("storage"))
            .map_err(|e| Error::io(format!("creating {}", dir.join("storage").display()), e))?;
        let port = match port {
            Some(p) => p,
            None => free_ports(1)?
                .first()
                .copied()
                .ok_or_else(|| Error::Missing("no free port on 127.0.0.1".into()))?,
        };
        if let Some((user, password)) = auth {
            write_htpasswd(&dir.join("htpasswd"), user, password)?;
        }
        let config = dir.join("config.yml");
        fs::write(&config, config_text(dir, port, auth.is_some()))
            .map_err(|e| Error::io(format!("writing {}", config.display()), e))?;
        let mut registry = Registry {
            dir: dir.to_path_buf(),
            port,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            child: None,
            group: None,
            runs: AtomicU32::new(0),
        };
        registry.spawn(false)?;
        Ok(registry)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file its output goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// The process id of the running registry.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The user and password it asks for, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Starts `docker-registry serve` on the configuration and waits until it answers.
    fn spawn(&mut self, append: bool) -> Result<(), Error> {
        let log = self.log_path();
        let out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(self.dir.join("config.yml"));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
        self.group = crate::reaper::register(child.id());
        self.child = Some(child);
        let ready = self.wait_ready();
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    /// Waits until `GET /v2/` answers 200, or 401 when a password is set.
    fn wait_ready(&mut self) -> Result<(), Error> {
        let want = if self.auth.is_some() { 401 } else { 200 };
        let addr = self.addr();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(Error::Helper {
                    what: format!("docker-registry exited ({status}) before answering on {addr}"),
                    log: tail_file(&self.log_path(), TAIL_LINES),
                });
            }
            // A short wait per probe: whatever holds the port may never answer.
            let last = match request(&addr, "/v2/", &[], Duration::from_secs(1)) {
                Ok(r) if r.status == want => return Ok(()),
                Ok(r) => format!("it answered {}", r.status),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("docker-registry to answer GET /v2/ on {addr} with {want} ({last})"),
                    after: READY_TIMEOUT,
                    log: tail_file(&self.log_path(), TAIL_LINES),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks it to stop (SIGTERM to its process group), kills the group after
    /// [`STOP_GRACE`], and reaps it. Does nothing when it is not running.
    pub fn stop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(None)) {
            let group = i32::try_from(child.id()).ok().map(Pid::from_raw);
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGTERM);
            }
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        self.group = None;
    }

    /// Starts it again on the same directory, port and storage (stopping it first if it
    /// runs); its output is appended to the log.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.spawn(true)
    }

    /// The file in the registry's storage that holds blob `digest`
    /// (`storage/docker/registry/v2/blobs/sha256/<first two hex>/<hex>/data`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_file(&self.dir.join("storage"), digest)
    }

    /// `GET path` with the registry's credentials (when it has any) and the extra `headers`.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, Error> {
        let auth = self.credentials().map(|(u, p)| basic_auth(u, p));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(("Authorization", auth));
        }
        http_get(&self.addr(), path, &all)
            .map_err(|e| Error::io(format!("GET http://{}{path}", self.addr()), e))
    }

    /// `GET /v2/REPO/manifests/REFERENCE` accepting every manifest type ([`MANIFEST_TYPES`]).
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<Reply, Error> {
        let accept = MANIFEST_TYPES.join(", ");
        self.get(&format!("/v2/{repo}/manifests/{reference}"), &[("Accept", &accept)])
    }

    /// The digest of manifest `repo`:`tag` as the registry stores it: its
    /// `Docker-Content-Digest` header, checked against the sha256 of the bytes it serves.
    /// With distribution 2.8.2 both agree for OCI manifests, Docker schema 2 manifests and
    /// OCI indexes alike (and with the sha256 of what `skopeo inspect --raw` reads), as long
    /// as the `Accept` names the stored type.
    pub fn manifest_digest(&self, repo: &str, tag: &str) -> Result<String, Error> {
        let reply = self.manifest(repo, tag)?;
        let fail = |why: String| Error::Helper {
            what: format!("GET /v2/{repo}/manifests/{tag} on {}: {why}", self.addr()),
            log: reply.text(),
        };
        if reply.status != 200 {
            return Err(fail(format!("status {}", reply.status)));
        }
        let header = reply
            .header("Docker-Content-Digest")
            .ok_or_else(|| fail("no Docker-Content-Digest header".into()))?
            .to_string();
        let body = oci::sha256_digest(&reply.body);
        if header != body {
            return Err(fail(format!("Docker-Content-Digest {header} but the body hashes to {body}")));
        }
        Ok(header)
    }

    /// Pushes the OCI image layout `layout` as `repo_tag` (`REPO:TAG`) with `skopeo copy`,
    /// in `format` (OCI pushes keep the layout's manifest byte for byte), and returns the
    /// manifest digest the registry stores (read back by [`Registry::manifest_digest`]).
    pub fn push(&self, layout: &Path, repo_tag: &str, format: Format) -> Result<String, Error> {
        let (repo, tag) = split_ref(repo_tag)?;
        let mut args = vec!["copy".to_string(), "--format".into(), format.skopeo_name().into()];
        if format == Format::Oci {
            args.push("--preserve-digests".into());
        }
        args.push(oci_source(layout)?);
        args.push(format!("docker://{}/{repo}:{tag}", self.addr()));
        self.skopeo(args)?;
        self.manifest_digest(repo, tag)
    }

    /// Pushes a two-platform OCI image index as `repo_tag`: the layout's linux/amd64
    /// image and a made-up linux/arm64 one (its own config and a one-file layer whose
    /// `etc/hello.txt` is [`ARM64_HELLO_TXT`]), the arm64 entry first, so a client that
    /// takes the first entry picks the wrong one. The layout holding the index is built in
    /// the registry's directory (see [`multi_arch_layout`]) and pushed with
    /// `skopeo copy --all`. Returns the index's digest as the registry stores it (the same
    /// as the built one, which is checked).
    pub fn push_index(&self, layout: &Path, repo_tag: &str) -> Result<String, Error> {
        let (repo, tag) = split_ref(repo_tag)?;
        let out = self.dir.join("layouts").join(format!("{repo}_{tag}").replace('/', "_"));
        let built = multi_arch_layout(layout, &out)
            .map_err(|e| Error::Usage(format!("building an image index from {}: {e}", layout.display())))?;
        let args = vec![
            "copy".to_string(),
            "--all".into(),
            "--preserve-digests".into(),
            oci_source(&out)?,
            format!("docker://{}/{repo}:{tag}", self.addr()),
        ];
        self.skopeo(args)?;
        let stored = self.manifest_digest(repo, tag)?;
        if stored != built {
            return Err(Error::Helper {
                what: format!("the registry stores {repo}:{tag} as {stored}, the index pushed is {built}"),
                log: String::new(),
            });
        }
        Ok(stored)
    }

    /// The manifest `repo_tag` as `skopeo inspect --raw` reads it (with the registry's
    /// credentials).
    pub fn inspect_raw(&self, repo_tag: &str) -> Result<Vec<u8>, Error> {
        let (repo, tag) = split_ref(repo_tag)?;
        let args =
            vec!["inspect".to_string(), "--raw".into(), format!("docker://{}/{repo}:{tag}", self.addr())];
        self.skopeo(args)
    }

    /// Runs `skopeo --insecure-policy ARGS` against this registry: plain HTTP and its
    /// credentials are added, no other credentials are read, and it is killed after
    /// [`SKOPEO_TIMEOUT`]. Its stdout and stderr go to `skopeo-N.out` and `skopeo-N.log`
    /// in the registry's directory; returns its stdout.
    fn skopeo(&self, mut args: Vec<String>) -> Result<Vec<u8>, Error> {
        let prefix = if args.first().is_some_and(|a| a == "copy") { "--dest-" } else { "--" };
        let mut extra = vec![format!("{prefix}tls-verify=false")];
        if let Some((user, password)) = self.credentials() {
            extra.push(format!("{prefix}creds"));
            extra.push(format!("{user}:{password}"));
        }
        args.splice(1..1, extra);
        let shown: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match (i.checked_sub(1).and_then(|j| args.get(j)), self.credentials()) {
                (Some(before), Some((user, _))) if before.ends_with("creds") => format!("{user}:***"),
                _ => a.clone(),
            })
            .collect();
        let what = format!("skopeo {}", shown.join(" "));
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("skopeo-{n}.out"));
        let log_path = self.dir.join(format!("skopeo-{n}.log"));
        let open = |p: &Path| File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e));
        let mut cmd = Command::new("skopeo");
        cmd.arg("--insecure-policy")
            .args(&args)
            .env("REGISTRY_AUTH_FILE", self.dir.join("no-auth.json"))
            .stdin(Stdio::null())
            .stdout(open(&out_path)?)
            .stderr(open(&log_path)?)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {what}"), e))?;
        let _group = crate::reaper::register(child.id());
        let deadline = Instant::now() + SKOPEO_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                waited => {
                    if let Ok(group) = i32::try_from(child.id()) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(group),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(match waited {
                        Err(e) => Error::io(format!("waiting for {what}"), e),
                        _ => Error::Timeout {
                            what,
                            after: SKOPEO_TIMEOUT,
                            log: tail_file(&log_path, TAIL_LINES),
                        },
                    });
                }
            }
        };
        if !status.success() {
            return Err(Error::Helper {
                what: format!("{what} failed with {status}"),
                log: tail_file(&log_path, TAIL_LINES),
            });
        }
        fs::read(&out_path).map_err(|e| Error::io(format!("reading {}", out_path.display()), e))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the bcrypt password file `path` for `user` with `htpasswd -Bbc`.
fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<(), Error> {
    if user.is_empty() || user.contains(':') {
        return Err(Error::Usage(format!("registry user {user:?}: empty or with ':'")));
    }
    let out = Command::new("htpasswd")
        .arg("-Bbc")
        .arg(path)
        .args([user, password])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running htpasswd", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Helper {
            what: format!("htpasswd -Bbc {} {user} *** failed with {}", path.display(), out.status),
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Reads a JSON document of the layout.
fn parse<T: for<'de> serde::Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Json { what: what.into(), message: e.to_string() })
}

/// A JSON document of the layout. They are plain structs, which always serialize.
fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Builds at `out` (emptied first) an OCI image layout whose `index.json` has one entry: a
/// two-platform OCI image index listing a made-up linux/arm64 image first and then the
/// linux/amd64 image that `layout`'s `index.json` names directly (its blobs are copied,
/// checked). The arm64 image has its own config and one small layer (`etc/hello.txt` is
/// [`ARM64_HELLO_TXT`]). Returns the image index's digest.
pub fn multi_arch_layout(layout: &Path, out: &Path) -> Result<String, ImageError> {
    let io = |what: String| move |source| ImageError::Io { what, source };
    if out.exists() {
        fs::remove_dir_all(out).map_err(io(format!("emptying {}", out.display())))?;
    }
    let index: Index =
        parse("index.json", &fs::read(layout.join("index.json")).map_err(io("reading index.json".into()))?)?;
    let amd64 = index
        .manifests
        .iter()
        .find(|d| {
            d.media_type == MEDIA_MANIFEST
                && d.platform.as_ref().is_none_or(|p| p.architecture == "amd64" && p.os == "linux")
        })
        .ok_or(ImageError::NoManifest)?;
    let manifest_bytes = oci::read_blob(layout, amd64)?;
    let manifest: Manifest = parse("the image manifest", &manifest_bytes)?;
    oci::write_blob(out, &manifest_bytes, MEDIA_MANIFEST)?;
    let config_bytes = oci::read_blob(layout, &manifest.config)?;
    let config: ImageConfig = parse("the image config", &config_bytes)?;
    oci::write_blob(out, &config_bytes, &manifest.config.media_type)?;
    for layer in &manifest.layers {
        oci::write_blob(out, &oci::read_blob(layout, layer)?, &layer.media_type)?;
    }

    let tar = oci::tar_entries(&[
        TarEntry::Dir("etc", 0o755),
        TarEntry::File("etc/hello.txt", 0o644, ARM64_HELLO_TXT.as_bytes()),
    ])?;
    let layer = oci::write_blob(out, &oci::gzip(&tar)?, MEDIA_LAYER_TAR_GZIP)?;
    let arm64_config = ImageConfig {
        architecture: "arm64".into(),
        os: "linux".into(),
        config: config.config,
        rootfs: RootFs { kind: "layers".into(), diff_ids: vec![oci::sha256_digest(&tar)] },
    };
    let arm64_config = oci::write_blob(out, &to_json(&arm64_config), MEDIA_CONFIG)?;
    let arm64 = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: arm64_config,
        layers: vec![layer],
    };
    let platform =
        |architecture: &str| Some(Platform { architecture: architecture.into(), os: "linux".into() });
    let arm64 =
        Descriptor { platform: platform("arm64"), ..oci::write_blob(out, &to_json(&arm64), MEDIA_MANIFEST)? };
    let amd64 = Descriptor { platform: platform("amd64"), annotations: Default::default(), ..amd64.clone() };
    let multi =
        Index { schema_version: 2, media_type: Some(MEDIA_INDEX.into()), manifests: vec![arm64, amd64] };
    let mut entry = oci::write_blob(out, &to_json(&multi), MEDIA_INDEX)?;
    let digest = entry.digest.clone();
    entry.annotations.insert("org.opencontainers.image.ref.name".into(), "latest".into());
    let top = Index { schema_version: 2, media_type: Some(MEDIA_INDEX.into()), manifests: vec![entry] };
    fs::write(out.join("index.json"), to_json(&top)).map_err(io("writing index.json".into()))?;
    fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io("writing oci-layout".into()))?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_serves_plain_http_on_loopback_from_the_storage_directory() {
        let text = config_text(Path::new("/tmp/reg"), 5123, false);
        assert_eq!(
            text,
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: \"/tmp/reg/storage\"\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:5123\n"
        );
        assert!(!text.contains("auth"));
    }

    #[test]
    fn with_a_password_the_config_names_the_htpasswd_file() {
        let text = config_text(Path::new("/tmp/a \"b\""), 80, true);
        assert!(text.contains("rootdirectory: \"/tmp/a \\\"b\\\"/storage\"\n"), "{text}");
        assert!(
            text.ends_with(&format!(
                "auth:\n  htpasswd:\n    realm: \"{REALM}\"\n    path: \"/tmp/a \\\"b\\\"/htpasswd\"\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn blobs_live_under_their_first_two_hex_digits() {
        let hex = "ab".to_string() + &"0".repeat(62);
        let want = PathBuf::from(format!("/r/storage/docker/registry/v2/blobs/sha256/ab/{hex}/data"));
        assert_eq!(blob_file(Path::new("/r/storage"), &format!("sha256:{hex}")), want);
        assert_eq!(blob_file(Path::new("/r/storage"), &hex), want);
        let registry_dir = Path::new("/r");
        assert_eq!(blob_file(&registry_dir.join("storage"), &format!("sha256:{hex}")), want);
    }

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_ref("busybox:1.36").unwrap(), ("busybox", "1.36"));
        assert_eq!(split_ref("library/busybox").unwrap(), ("library/busybox", "latest"));
        assert_eq!(split_ref("a/b:V1_x").unwrap(), ("a/b", "V1_x"));
        for bad in ["", ":x", "Upper:1", "a:", "a b:1", "a:b:c"] {
            assert!(split_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_are_split_and_cut_to_their_length() {
        let raw = b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"r\"\r\nContent-Length: 2\r\n\r\n{}junk";
        let r = parse_reply(raw).unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"r\""));
        assert_eq!(r.body, b"{}");
        assert!(parse_reply(b"garbage\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        assert_eq!(basic_auth("u", "p"), "Basic dTpw");
    }

    #[test]
    fn the_index_layout_lists_arm64_first_and_keeps_the_amd64_manifest() {
        let dir = std::env::temp_dir().join(format!("crx-registry-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let tar = oci::tar_entries(&[TarEntry::File("x", 0o644, b"x")]).unwrap();
        let amd64 = oci::write_layout(&dir.join("src"), &[tar], Default::default()).unwrap();
        let digest = multi_arch_layout(&dir.join("src"), &dir.join("out")).unwrap();
        let out = dir.join("out");
        let top: Index = parse("index.json", &fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(top.manifests.len(), 1);
        assert_eq!(top.manifests[0].media_type, MEDIA_INDEX);
        assert_eq!(top.manifests[0].digest, digest);
        let multi: Index = parse("index", &oci::read_blob(&out, &top.manifests[0]).unwrap()).unwrap();
        let archs: Vec<&str> =
            multi.manifests.iter().map(|d| d.platform.as_ref().unwrap().architecture.as_str()).collect();
        assert_eq!(archs, ["arm64", "amd64"]);
        assert_eq!(multi.manifests[1].digest, amd64);
        // The copied layout is whole: the amd64 image reads back through the index.
        assert!(oci::Image::open(&out).is_ok());
        let arm: Manifest = parse("arm64", &oci::read_blob(&out, &multi.manifests[0]).unwrap()).unwrap();
        let config: ImageConfig = parse("config", &oci::read_blob(&out, &arm.config).unwrap()).unwrap();
        assert_eq!((config.architecture.as_str(), config.os.as_str()), ("arm64", "linux"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
