//! The puller against a fake registry and token server.

use super::*;
use crate::image::Reference;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;
use manifest::*;

const TOKEN: &str = "tok-123";
const REPO: &str = "library/busybox";
const HOST: &str = "127.0.0.1:5000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Anonymous,
    Bearer,
    Basic,
    /// Bearer, and the token server wants the basic credentials.
    BearerWithBasic,
}

struct Logged {
    host: String,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
}

struct Registry {
    mode: Mode,
    realm: String,
    down: bool,
    manifests: BTreeMap<String, (String, Vec<u8>)>,
    blobs: BTreeMap<String, Vec<u8>>,
    /// Whole responses by path, instead of the above.
    raw: BTreeMap<String, Vec<u8>>,
    log: Vec<Logged>,
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn basic_of(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

impl Registry {
    fn new(mode: Mode) -> Self {
        Registry {
            mode,
            realm: "http://auth.test/token".into(),
            down: false,
            manifests: BTreeMap::new(),
            blobs: BTreeMap::new(),
            raw: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn handle(&mut self, host: &str, head: &wire::http::RequestHead) -> Vec<u8> {
        let authorization = head.header("authorization").map(String::from);
        self.log.push(Logged {
            host: host.into(),
            path: head.target.clone(),
            authorization: authorization.clone(),
            accept: head.header("accept").map(String::from),
        });
        if host == "auth.test" {
            if self.mode == Mode::BearerWithBasic && authorization != Some(basic_of("u", "p")) {
                return response(401, &[], br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
            }
            return response(200, &[], format!("{{\"token\":\"{TOKEN}\"}}").as_bytes());
        }
        if let Some(raw) = self.raw.get(&head.target) {
            return raw.clone();
        }
        let unauthorized = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        match self.mode {
            Mode::Anonymous => {}
            Mode::Bearer | Mode::BearerWithBasic => {
                if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                    let c = format!(
                        "Bearer realm=\"{}\",service=\"reg.test\",scope=\"repository:{REPO}:pull\"",
                        self.realm
                    );
                    return response(401, &[("WWW-Authenticate", &c)], unauthorized);
                }
            }
            Mode::Basic => {
                if authorization != Some(basic_of("u", "p")) {
                    return response(
                        401,
                        &[("WWW-Authenticate", "Basic realm=\"Registry Realm\"")],
                        unauthorized,
                    );
                }
            }
        }
        let path = head.target.as_str();
        if let Some(r) = path.strip_prefix(&format!("/v2/{REPO}/manifests/")) {
            return match self.manifests.get(r) {
                Some((ct, body)) => {
                    let digest = sha256_digest(body);
                    response(200, &[("Content-Type", ct), ("Docker-Content-Digest", &digest)], body)
                }
                None => response(
                    404,
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                ),
            };
        }
        if let Some(d) = path.strip_prefix(&format!("/v2/{REPO}/blobs/")) {
            return match self.blobs.get(d) {
                Some(body) => response(200, &[("Content-Type", "application/octet-stream")], body),
                None => response(404, &[], br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#),
            };
        }
        response(404, &[], b"")
    }

    fn add_blob(&mut self, bytes: &[u8]) -> String {
        let d = sha256_digest(bytes);
        self.blobs.insert(d.clone(), bytes.to_vec());
        d
    }

    /// A two-layer image (gzip, then `second_layer_type`) and its manifest of `manifest_type`,
    /// stored by digest; returns the manifest's bytes.
    fn add_image(&mut self, manifest_type: &str, config_type: &str, arch: &str) -> Vec<u8> {
        let (l1, d1) = (gz(b"layer one tar bytes"), sha256_digest(b"layer one tar bytes"));
        let l2 = b"layer two: a plain tar".to_vec();
        let d2 = sha256_digest(&l2);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Entrypoint":["/bin/sh"],"Cmd":["-c","echo hi"],"Env":["PATH=/bin"],"WorkingDir":"/w"}},"rootfs":{{"type":"layers","diff_ids":["{d1}","{d2}"]}}}}"#
        );
        self.add_image_with(
            manifest_type,
            config_type,
            config.as_bytes(),
            &[(DOCKER_LAYER_GZIP, l1), (OCI_LAYER_TAR, l2)],
        )
    }

    fn add_image_with(
        &mut self,
        manifest_type: &str,
        config_type: &str,
        config: &[u8],
        layers: &[(&str, Vec<u8>)],
    ) -> Vec<u8> {
        let cd = self.add_blob(config);
        let layers: Vec<String> = layers
            .iter()
            .map(|(t, b)| {
                let d = self.add_blob(b);
                format!(r#"{{"mediaType":"{t}","digest":"{d}","size":{}}}"#, b.len())
            })
            .collect();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{manifest_type}","config":{{"mediaType":"{config_type}","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layers.join(",")
        );
        self.manifests.insert(sha256_digest(m.as_bytes()), (manifest_type.into(), m.clone().into_bytes()));
        m.into_bytes()
    }

    fn tag(&mut self, tag: &str, media_type: &str, body: &[u8]) {
        self.manifests.insert(tag.into(), (media_type.into(), body.to_vec()));
    }

    fn requested(&self, needle: &str) -> bool {
        self.log.iter().any(|l| l.path.contains(needle))
    }
}

/// A deflate stream of stored blocks around `data`, gzip-wrapped.
fn gz(data: &[u8]) -> Vec<u8> {
    let mut deflated = Vec::new();
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        deflated.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let n = c.len() as u16;
        deflated.push(u8::from(chunks.peek().is_none()));
        deflated.extend_from_slice(&n.to_le_bytes());
        deflated.extend_from_slice(&(!n).to_le_bytes());
        deflated.extend_from_slice(c);
    }
    crx_fs::gzip::wrap_deflate(&deflated, data, None)
}

fn entry(m: &[u8], media_type: &str, os: &str, arch: &str, variant: Option<&str>) -> String {
    let v = variant.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
    format!(
        r#"{{"mediaType":"{media_type}","digest":"{}","size":{},"platform":{{"os":"{os}","architecture":"{arch}"{v}}}}}"#,
        sha256_digest(m),
        m.len()
    )
}

fn index(media_type: &str, entries: &[String]) -> Vec<u8> {
    format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#, entries.join(","))
        .into_bytes()
}

struct Fake(Rc<RefCell<Registry>>);

struct Conn {
    reg: Rc<RefCell<Registry>>,
    host: String,
    written: Vec<u8>,
    reply: Option<Vec<u8>>,
}

impl Connector for Fake {
    type Conn = Conn;
    fn open(&mut self, _scheme: Scheme, host: &str) -> Result<Conn, HttpError> {
        Ok(Conn { reg: self.0.clone(), host: host.into(), written: Vec::new(), reply: None })
    }
}

impl crate::http::Transport for Conn {
    fn connect(&mut self) -> Result<(), HttpError> {
        if self.reg.borrow().down {
            return Err(HttpError::Transport("connection refused".into()));
        }
        Ok(())
    }
    fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError> {
        self.written.extend_from_slice(buf);
        Ok(())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if self.reply.is_none() {
            let limits = wire::http::HeadLimits { max_bytes: 64 * 1024, max_headers: 64 };
            let (head, _) = wire::http::parse_request(&self.written, limits).unwrap().unwrap();
            self.reply = Some(self.reg.borrow_mut().handle(&self.host, &head));
        }
        let reply = self.reply.as_mut().unwrap();
        // Small reads, so bodies arrive in many pieces.
        let n = reply.len().min(buf.len()).min(1000);
        buf[..n].copy_from_slice(&reply[..n]);
        reply.drain(..n);
        Ok(n)
    }
}

fn opts() -> PullOptions {
    PullOptions::new(Scheme::Http, 1 << 20)
}

fn run(reg: Registry, reference: &str, opts: &PullOptions) -> (Result<Image, PullError>, Registry) {
    let shared = Rc::new(RefCell::new(reg));
    let r = pull(&mut Fake(shared.clone()), &Reference::parse(reference).unwrap(), opts);
    let reg = Rc::try_unwrap(shared).ok().unwrap().into_inner();
    (r, reg)
}

fn reference(tag: &str) -> String {
    format!("{HOST}/{REPO}:{tag}")
}

#[test]
fn an_image_with_more_layers_than_a_pod_vm_takes_is_refused_before_its_blobs() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let (r, reg) = run(reg, &reference("1.36"), &PullOptions { max_layers: 1, ..opts() });
    assert_eq!(r.unwrap_err(), PullError::TooManyLayers { layers: 2, limit: 1 });
    assert_eq!(reg.log.len(), 1, "only the manifest was fetched");
}

#[test]
fn unpacked_layers_are_kept_on_request() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let (r, _) = run(reg, &reference("1.36"), &PullOptions { unpack: true, ..opts() });
    let img = r.unwrap();
    assert_eq!(img.layers[0].tar(), Some(&b"layer one tar bytes"[..]));
    assert_eq!(img.layers[1].tar(), Some(&b"layer two: a plain tar"[..]));
    assert_eq!(img.layers[1].unpacked, None, "a plain tar is not copied");
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let img = run(reg, &reference("1.36"), &opts()).0.unwrap();
    assert_eq!(img.layers[0].tar(), None);
}

fn check_image(img: &Image, reference: &str) {
    assert_eq!(img.config.names, vec![Reference::parse(reference).unwrap().to_string()]);
    assert_eq!(img.config.entrypoint, vec!["/bin/sh"]);
    assert_eq!(img.config.cmd, vec!["-c", "echo hi"]);
    assert_eq!(img.config.env, vec!["PATH=/bin"]);
    assert_eq!(img.config.working_dir, "/w");
    assert!(valid_digest(&img.config.id));
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[0].kind, LayerKind::TarGzip);
    assert_eq!(img.layers[0].bytes, gz(b"layer one tar bytes"));
    assert_eq!(img.layers[1].kind, LayerKind::Tar);
    assert_eq!(img.layers[1].bytes, b"layer two: a plain tar");
    for l in &img.layers {
        assert_eq!(l.digest, sha256_digest(&l.bytes));
    }
}

#[test]
fn oci_index_to_the_amd64_manifest() {
    let mut reg = Registry::new(Mode::Anonymous);
    let arm = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "arm64");
    let amd = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    let idx = index(
        OCI_INDEX,
        &[
            entry(&arm, OCI_MANIFEST, "linux", "arm64", None),
            entry(&arm, OCI_MANIFEST, "linux", "amd64", Some("v3")),
            entry(&amd, OCI_MANIFEST, "linux", "amd64", None),
        ],
    );
    reg.tag("1.36", OCI_INDEX, &idx);
    let (r, reg) = run(reg, &reference("1.36"), &opts());
    let img = r.unwrap();
    check_image(&img, &reference("1.36"));
    assert_eq!(img.manifest_digest, sha256_digest(&amd));
    let first = &reg.log[0];
    assert_eq!(first.path, format!("/v2/{REPO}/manifests/1.36"));
    for t in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
        assert!(first.accept.as_deref().unwrap().contains(t), "{t}");
    }
    assert!(reg.requested(&sha256_digest(&amd)) && !reg.requested(&sha256_digest(&arm)));
}

#[test]
fn docker_manifest_list() {
    let mut reg = Registry::new(Mode::Anonymous);
    let amd = reg.add_image(DOCKER_MANIFEST, DOCKER_CONFIG, "amd64");
    let list = index(DOCKER_LIST, &[entry(&amd, DOCKER_MANIFEST, "linux", "amd64", None)]);
    reg.tag("latest", DOCKER_LIST, &list);
    let (r, _) = run(reg, &format!("{HOST}/{REPO}"), &opts());
    check_image(&r.unwrap(), &reference("latest"));
}

#[test]
fn direct_docker_and_oci_manifests() {
    for (mt, ct) in [(DOCKER_MANIFEST, DOCKER_CONFIG), (OCI_MANIFEST, OCI_CONFIG)] {
        let mut reg = Registry::new(Mode::Anonymous);
        let m = reg.add_image(mt, ct, "amd64");
        reg.tag("1.36", mt, &m);
        let (r, _) = run(reg, &reference("1.36"), &opts());
        let img = r.unwrap();
        check_image(&img, &reference("1.36"));
        assert_eq!(img.manifest_digest, sha256_digest(&m));
    }
    // Kind by the body's mediaType when the server says only JSON.
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", "application/json", &m);
    assert!(run(reg, &reference("1.36"), &opts()).0.is_ok());
}

#[test]
fn by_digest() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    let d = sha256_digest(&m);
    let by_digest = format!("{HOST}/{REPO}@{d}");
    let (r, reg) = run(reg, &by_digest, &opts());
    check_image(&r.unwrap(), &by_digest);
    assert_eq!(reg.log[0].path, format!("/v2/{REPO}/manifests/{d}"));
    // A registry that answers a digest with other bytes.
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    let d = sha256_digest(&m);
    let mut other = m.clone();
    other.push(b' ');
    reg.tag(&d, OCI_MANIFEST, &other);
    let e = run(reg, &format!("{HOST}/{REPO}@{d}"), &opts()).0.unwrap_err();
    assert_eq!(e, PullError::DigestMismatch { digest: d.clone(), actual: sha256_digest(&other) });
    assert!(e.to_string().contains(&d));
}

#[test]
fn bearer_challenge() {
    let mut reg = Registry::new(Mode::Bearer);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let (r, reg) = run(reg, &reference("1.36"), &opts());
    check_image(&r.unwrap(), &reference("1.36"));
    assert_eq!(reg.log[0].authorization, None);
    let t = &reg.log[1];
    assert_eq!(t.host, "auth.test");
    assert_eq!(t.path, "/token?service=reg.test&scope=repository%3Alibrary%2Fbusybox%3Apull");
    assert_eq!(t.authorization, None);
    // One token for the whole pull: manifest, config, two layers.
    assert_eq!(reg.log.len(), 6);
    assert!(reg.log[2..].iter().all(|l| l.authorization.as_deref() == Some("Bearer tok-123")));
}

#[test]
fn bearer_token_with_basic_credentials() {
    let mk = || {
        let mut reg = Registry::new(Mode::BearerWithBasic);
        let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
        reg.tag("1.36", OCI_MANIFEST, &m);
        reg
    };
    let creds = PullOptions { credentials: Some(("u".into(), "p".into())), ..opts() };
    let (r, reg) = run(mk(), &reference("1.36"), &creds);
    check_image(&r.unwrap(), &reference("1.36"));
    assert_eq!(reg.log[1].authorization, Some(basic_of("u", "p")));
    let e = run(mk(), &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(&e, PullError::Unauthorized { what, .. } if what == "a token from auth.test"), "{e}");
}

#[test]
fn basic_auth() {
    let mk = || {
        let mut reg = Registry::new(Mode::Basic);
        let m = reg.add_image(DOCKER_MANIFEST, DOCKER_CONFIG, "amd64");
        reg.tag("1.36", DOCKER_MANIFEST, &m);
        reg
    };
    let creds = |p: &str| PullOptions { credentials: Some(("u".into(), p.into())), ..opts() };
    let (r, reg) = run(mk(), &reference("1.36"), &creds("p"));
    check_image(&r.unwrap(), &reference("1.36"));
    assert_eq!(reg.log[0].authorization, None, "credentials are not sent unasked");
    assert!(reg.log[1..].iter().all(|l| l.authorization == Some(basic_of("u", "p"))));
    for o in [opts(), creds("wrong")] {
        let e = run(mk(), &reference("1.36"), &o).0.unwrap_err();
        assert_eq!(
            e,
            PullError::Unauthorized {
                what: format!("manifest {REPO}:1.36"),
                code: Some("UNAUTHORIZED".into())
            }
        );
        assert!(e.to_string().contains("401 unauthorized"));
    }
}

#[test]
fn registry_down() {
    let mut reg = Registry::new(Mode::Anonymous);
    reg.down = true;
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(e, PullError::Unreachable { host: HOST.into(), message: "connection refused".into() });
    assert_eq!(e.to_string(), "registry 127.0.0.1:5000 unreachable: connection refused");
}

#[test]
fn missing_tag_and_blob() {
    let e = run(Registry::new(Mode::Anonymous), &reference("nope"), &opts()).0.unwrap_err();
    assert_eq!(e.to_string(), "manifest library/busybox:nope not found (MANIFEST_UNKNOWN)");
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let last = reg.blobs.keys().last().cloned().unwrap();
    reg.blobs.remove(&last);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(&e, PullError::NotFound { what, .. } if what == &format!("blob {last}")), "{e}");
}

#[test]
fn corrupted_blob_is_a_digest_mismatch() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let layer = sha256_digest(b"layer two: a plain tar");
    reg.blobs.insert(layer.clone(), b"layer two: a plain taR".to_vec());
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(
        e,
        PullError::DigestMismatch { digest: layer.clone(), actual: sha256_digest(b"layer two: a plain taR") }
    );
    assert!(e.to_string().contains(&layer));
}

#[test]
fn unsupported_media_types() {
    let v1 = br#"{"schemaVersion":1,"name":"library/busybox","tag":"1.36","fsLayers":[]}"#;
    let mut reg = Registry::new(Mode::Anonymous);
    reg.tag("1.36", "application/vnd.docker.distribution.manifest.v1+prettyjws", v1);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(
        e,
        PullError::UnsupportedMediaType("application/vnd.docker.distribution.manifest.v1+prettyjws".into())
    );
    // A zstd layer is refused before any blob is fetched.
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image_with(
        OCI_MANIFEST,
        OCI_CONFIG,
        br#"{"os":"linux","architecture":"amd64"}"#,
        &[("application/vnd.oci.image.layer.v1.tar+zstd", b"z".to_vec())],
    );
    reg.tag("1.36", OCI_MANIFEST, &m);
    let (r, reg) = run(reg, &reference("1.36"), &opts());
    assert_eq!(
        r.unwrap_err(),
        PullError::UnsupportedMediaType("application/vnd.oci.image.layer.v1.tar+zstd".into())
    );
    assert!(!reg.requested("/blobs/"));
}

#[test]
fn image_over_the_limit() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let total: u64 = reg.blobs.values().map(|b| b.len() as u64).sum();
    let small = PullOptions::new(Scheme::Http, total - 1);
    let (r, reg) = run(reg, &reference("1.36"), &small);
    assert_eq!(r.unwrap_err(), PullError::TooLarge { limit_bytes: total - 1, needed_bytes: total });
    assert!(!reg.requested("/blobs/"));
}

#[test]
fn malformed_json() {
    let mut reg = Registry::new(Mode::Anonymous);
    reg.tag("1.36", OCI_MANIFEST, br#"{"schemaVersion":2,"config":"#);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(e, PullError::Json { what: "manifest", .. }), "{e}");
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, b"{not json", &[]);
    reg.tag("1.36", OCI_MANIFEST, &m);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(e, PullError::Json { what: "image config", .. }), "{e}");
    assert!(e.to_string().starts_with("malformed image config"));
}

#[test]
fn lying_content_length() {
    let mk = || {
        let mut reg = Registry::new(Mode::Anonymous);
        let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
        reg.tag("1.36", OCI_MANIFEST, &m);
        reg
    };
    let layer = b"layer two: a plain tar";
    let path = format!("/v2/{REPO}/blobs/{}", sha256_digest(layer));
    let d = sha256_digest(layer);
    // More promised than sent: the connection closes early.
    let mut reg = mk();
    let mut raw = response(200, &[], layer);
    raw =
        String::from_utf8(raw).unwrap().replacen("Content-Length: 22", "Content-Length: 99", 1).into_bytes();
    reg.raw.insert(path.clone(), raw);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(e, PullError::SizeMismatch { expected: 22, actual: 99, .. }), "{e}");
    // The descriptor's length promised, fewer bytes sent.
    let mut reg = mk();
    let mut raw = response(200, &[], layer);
    raw.truncate(raw.len() - 5);
    reg.raw.insert(path.clone(), raw);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(e, PullError::Http { error: HttpError::Truncated, .. }), "{e}");
    // A connection that closes before a byte (a forward whose far end is down).
    let mut reg = mk();
    reg.raw.insert(path.clone(), Vec::new());
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(
        matches!(&e, PullError::Unreachable { message, .. } if message.contains("before any answer")),
        "{e}"
    );
    // Chunked, and more bytes than the descriptor's size.
    let mut reg = mk();
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        raw.extend_from_slice(format!("{:x}\r\n", layer.len()).as_bytes());
        raw.extend_from_slice(layer);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    reg.raw.insert(path, raw);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(&e, PullError::SizeMismatch { digest, expected: 22, .. } if digest == &d), "{e}");
}

#[test]
fn oversized_manifests() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let small = PullOptions { max_manifest_bytes: m.len() - 1, ..opts() };
    let e = run(reg, &reference("1.36"), &small).0.unwrap_err();
    assert_eq!(e, PullError::ManifestTooLarge { limit_bytes: m.len() - 1 });
    // A huge Content-Length is refused before its body is read.
    let mut reg = Registry::new(Mode::Anonymous);
    reg.raw.insert(
        format!("/v2/{REPO}/manifests/1.36"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 4194305\r\n\r\n{".to_vec(),
    );
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(e, PullError::ManifestTooLarge { limit_bytes: MAX_MANIFEST_BYTES });
    // Chunked past the bound.
    let mut reg = Registry::new(Mode::Anonymous);
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(b"100000\r\n");
        raw.extend(core::iter::repeat_n(b' ', 0x100000));
        raw.extend_from_slice(b"\r\n");
    }
    reg.raw.insert(format!("/v2/{REPO}/manifests/1.36"), raw);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(e, PullError::ManifestTooLarge { limit_bytes: MAX_MANIFEST_BYTES });
}

#[test]
fn diff_ids_are_checked() {
    let mut reg = Registry::new(Mode::Anonymous);
    let wrong = sha256_digest(b"something else");
    let config = format!(
        r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{wrong}"]}}}}"#
    );
    let m = reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, config.as_bytes(), &[(OCI_LAYER_GZIP, gz(b"tar"))]);
    reg.tag("1.36", OCI_MANIFEST, &m);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(
        e,
        PullError::DiffIdMismatch {
            layer: sha256_digest(&gz(b"tar")),
            expected: wrong,
            actual: sha256_digest(b"tar")
        }
    );
    // A layer whose blob is intact but is not gzip.
    let mut reg = Registry::new(Mode::Anonymous);
    let config = format!(
        r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256_digest(b"tar")
    );
    let m =
        reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, config.as_bytes(), &[(OCI_LAYER_GZIP, b"tar".to_vec())]);
    reg.tag("1.36", OCI_MANIFEST, &m);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert!(matches!(e, PullError::Gzip { .. }), "{e}");
    // More diff_ids than layers, and a layer that unpacks past the bound.
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, config.as_bytes(), &[]);
    reg.tag("1.36", OCI_MANIFEST, &m);
    assert_eq!(
        run(reg, &reference("1.36"), &opts()).0.unwrap_err(),
        PullError::DiffIdCount { layers: 0, diff_ids: 1 }
    );
    let mut reg = Registry::new(Mode::Anonymous);
    let big = vec![0u8; 5000];
    let config = format!(
        r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256_digest(&big)
    );
    let m = reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, config.as_bytes(), &[(OCI_LAYER_GZIP, gz(&big))]);
    reg.tag("1.36", OCI_MANIFEST, &m);
    let tight = PullOptions { max_unpacked_bytes: 4999, ..opts() };
    assert_eq!(
        run(reg, &reference("1.36"), &tight).0.unwrap_err(),
        PullError::UnpackedTooLarge { limit_bytes: 4999 }
    );
}

#[test]
fn platforms() {
    let mut reg = Registry::new(Mode::Anonymous);
    let arm = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "arm64");
    reg.tag("1.36", OCI_INDEX, &index(OCI_INDEX, &[entry(&arm, OCI_MANIFEST, "linux", "arm64", None)]));
    reg.tag("arm", OCI_MANIFEST, &arm);
    let e = run(reg, &reference("1.36"), &opts()).0.unwrap_err();
    assert_eq!(e.to_string(), "no linux/amd64 image in the index (it has: linux/arm64)");
    let mut reg = Registry::new(Mode::Anonymous);
    let arm = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "arm64");
    reg.tag("arm", OCI_MANIFEST, &arm);
    let e = run(reg, &reference("arm"), &opts()).0.unwrap_err();
    assert_eq!(e, PullError::WrongPlatform { os: "linux".into(), architecture: "arm64".into() });
}

#[test]
fn plain_http_realm_refused_for_a_tls_registry() {
    let mut reg = Registry::new(Mode::Bearer);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let (r, reg) = run(reg, &reference("1.36"), &PullOptions::new(Scheme::Https, 1 << 20));
    assert!(matches!(r, Err(PullError::InsecureRealm(_))));
    assert!(reg.log.iter().all(|l| l.host != "auth.test"));
}

#[test]
fn manifest_parser_refuses_bad_descriptors() {
    let bad = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../x","size":1},"layers":[]}"#;
    assert!(matches!(parse_manifest(None, bad), Err(PullError::BadDigest(_))));
    let neg = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00","size":-1}]}"#;
    assert!(matches!(parse_manifest(None, neg), Err(PullError::Json { .. })));
    assert!(matches!(
        parse_manifest(Some("text/html"), b"{\"schemaVersion\":2}"),
        Err(PullError::UnsupportedMediaType(_))
    ));
}

/// A connection whose every operation waits once (answers `Pending`) before it is done, as
/// the kernel's does while its socket is empty.
struct Waiting(Conn);

struct WaitingFake(Rc<RefCell<Registry>>);

impl Connector for WaitingFake {
    type Conn = Waiting;
    fn open(&mut self, scheme: Scheme, host: &str) -> Result<Waiting, HttpError> {
        Fake(self.0.clone()).open(scheme, host).map(Waiting)
    }
}

/// A future that is pending at its first poll.
async fn wait_once() {
    let mut waited = false;
    core::future::poll_fn(|_| {
        if waited {
            core::task::Poll::Ready(())
        } else {
            waited = true;
            core::task::Poll::Pending
        }
    })
    .await
}

impl AsyncTransport for Waiting {
    async fn connect(&mut self) -> Result<(), HttpError> {
        wait_once().await;
        crate::http::Transport::connect(&mut self.0)
    }
    async fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError> {
        wait_once().await;
        crate::http::Transport::write_all(&mut self.0, buf)
    }
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        wait_once().await;
        crate::http::Transport::read(&mut self.0, buf)
    }
}

#[test]
fn a_pull_over_connections_that_wait_is_polled_to_its_end() {
    let mut reg = Registry::new(Mode::Bearer);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let shared = Rc::new(RefCell::new(reg));
    let reference = Reference::parse(&reference("1.36")).unwrap();
    let opts = opts();
    let mut connector = WaitingFake(shared.clone());
    let mut fut = core::pin::pin!(pull_async(&mut connector, &reference, &opts));
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    let mut polls = 0;
    let img = loop {
        polls += 1;
        if let core::task::Poll::Ready(r) = core::future::Future::poll(fut.as_mut(), &mut cx) {
            break r.unwrap();
        }
        assert!(polls < 100_000, "the pull never ends");
    };
    assert_eq!(img.manifest_digest, sha256_digest(&m));
    // Six exchanges (manifest, token, manifest again, config, two layers), each waiting at
    // its connect, its write and every read.
    assert!(polls > 6 * 3, "{polls} polls: the pull did not wait");
}

/// A layer store in memory: tars by blob digest, with what was begun, aborted and kept.
#[derive(Default)]
struct Tars {
    kept: BTreeMap<String, (String, Vec<u8>)>,
    current: Option<(String, u64, Vec<u8>)>,
    /// Refuse writes past this many bytes of one tar (a node out of frames).
    room: Option<usize>,
    aborted: usize,
}

impl LayerStore for Tars {
    type Stored = Vec<u8>;
    fn reuse(&mut self, digest: &str, diff_id: &str) -> Option<Vec<u8>> {
        self.kept.get(digest).filter(|(d, _)| d == diff_id).map(|(_, t)| t.clone())
    }
    fn begin(&mut self, digest: &str, len_hint: u64) -> Result<(), PullError> {
        self.current = Some((digest.into(), len_hint, Vec::new()));
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), PullError> {
        let (_, _, t) = self.current.as_mut().unwrap();
        if self.room.is_some_and(|r| t.len() + chunk.len() > r) {
            return Err(PullError::OutOfMemory { bytes: (t.len() + chunk.len()) as u64 });
        }
        t.extend_from_slice(chunk);
        Ok(())
    }
    fn finish(&mut self, diff_id: &str) -> Result<Vec<u8>, PullError> {
        let (digest, hint, tar) = self.current.take().unwrap();
        assert_eq!(hint, tar.len() as u64, "the length hint of {digest}");
        self.kept.insert(digest, (diff_id.into(), tar.clone()));
        Ok(tar)
    }
    fn abort(&mut self) {
        self.current = None;
        self.aborted += 1;
    }
}

fn run_into(reg: Registry, reference: &str, tars: &mut Tars) -> (Result<Vec<Vec<u8>>, PullError>, Registry) {
    let shared = Rc::new(RefCell::new(reg));
    let r = crate::http::block_on(pull_into(
        &mut Fake(shared.clone()),
        &Reference::parse(reference).unwrap(),
        &opts(),
        tars,
    ));
    let reg = Rc::try_unwrap(shared).ok().unwrap().into_inner();
    (
        r.map(|(img, stored)| {
            assert!(img.layers.iter().all(|l| l.bytes.is_empty() && l.unpacked.is_none()));
            stored
        }),
        reg,
    )
}

#[test]
fn layers_go_into_the_store_as_they_inflate_and_a_held_layer_is_not_fetched_again() {
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    reg.tag("again", OCI_MANIFEST, &m);
    let mut tars = Tars::default();
    let (r, reg) = run_into(reg, &reference("1.36"), &mut tars);
    assert_eq!(r.unwrap(), [b"layer one tar bytes".to_vec(), b"layer two: a plain tar".to_vec()]);
    let blobs = reg.log.iter().filter(|l| l.path.contains("/blobs/")).count();
    assert_eq!(blobs, 3, "config and two layers");
    // The same layers again: only the manifest and the config are fetched.
    let (r, reg) = run_into(reg, &reference("again"), &mut tars);
    assert_eq!(r.unwrap().len(), 2);
    assert_eq!(reg.log.iter().filter(|l| l.path.contains("/blobs/")).count(), blobs + 1);
    assert_eq!(tars.aborted, 0);
}

#[test]
fn a_layer_that_fails_its_diff_id_or_finds_no_room_is_let_go() {
    let mut reg = Registry::new(Mode::Anonymous);
    let l1 = gz(b"the real tar");
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256_digest(b"another tar")
    );
    let m = reg.add_image_with(OCI_MANIFEST, OCI_CONFIG, cfg.as_bytes(), &[(DOCKER_LAYER_GZIP, l1)]);
    reg.tag("bad", OCI_MANIFEST, &m);
    let mut tars = Tars::default();
    let (r, _) = run_into(reg, &reference("bad"), &mut tars);
    assert!(matches!(r, Err(PullError::DiffIdMismatch { .. })), "{r:?}");
    assert_eq!((tars.aborted, tars.kept.len()), (1, 0));
    let mut reg = Registry::new(Mode::Anonymous);
    let m = reg.add_image(OCI_MANIFEST, OCI_CONFIG, "amd64");
    reg.tag("1.36", OCI_MANIFEST, &m);
    let mut tars = Tars { room: Some(4), ..Tars::default() };
    let (r, _) = run_into(reg, &reference("1.36"), &mut tars);
    assert!(matches!(r, Err(PullError::OutOfMemory { .. })), "{r:?}");
    assert_eq!((tars.aborted, tars.kept.len()), (1, 0));
}
