//! The registry harness against the real programs: `docker-registry` serving on a free
//! loopback port with its storage under `target/registry-tests/`, and skopeo pushing the
//! busybox image (built from the host's static busybox) to it. What the registry serves is
//! read back with plain HTTP GETs and cross-checked with `skopeo inspect --raw`. Every
//! registry is stopped when its test ends, also when it fails; skopeo runs are waited for
//! (and killed after a timeout) inside each call.

use qemu::oci::{
    self, MEDIA_CONFIG, MEDIA_DOCKER_LAYER, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_LAYER_TAR_GZIP,
    MEDIA_MANIFEST,
};
use qemu::registry::{http_get, Format, Registry, ARM64_HELLO_TXT, REALM};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A directory under `target/registry-tests/`, removed on drop unless the test failed (its
/// registry log is then kept to read).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            qemu::image::target_dir().join("registry-tests").join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("registry test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The busybox layout in `dir/busybox` and its manifest digest.
fn busybox(dir: &Path) -> (PathBuf, String) {
    // Once for both tests: two apt-get runs at a time would fight over its lock.
    static SETUP: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let setup = SETUP.get_or_init(|| {
        let needs: Vec<_> = [qemu::setup::BUSYBOX, qemu::setup::REGISTRY].concat();
        qemu::setup::ensure(&needs).map_err(|e| e.to_string())
    });
    if let Err(e) = setup {
        panic!("{e}");
    }
    let layout = dir.join("busybox");
    let digest = oci::build_busybox_image(Path::new(qemu::setup::BUSYBOX_PATH), &layout)
        .expect("building the busybox layout");
    (layout, digest)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The manifest `repo:reference`, checked to be served with status 200, `content_type` and a
/// `Docker-Content-Digest` that is the sha256 of its body.
fn served(reg: &Registry, repo: &str, reference: &str, content_type: &str) -> (String, Value) {
    let r = reg.manifest(repo, reference).expect("GET manifest");
    assert_eq!(r.status, 200, "{repo}:{reference}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some(content_type), "{repo}:{reference}");
    let digest = r.header("Docker-Content-Digest").expect("Docker-Content-Digest").to_string();
    assert_eq!(digest, oci::sha256_digest(&r.body), "the header names the bytes served");
    (digest, json(&r.body))
}

#[test]
fn pushed_images_keep_their_formats_the_index_its_order_and_a_restart_its_storage() {
    let scratch = Scratch::new("formats");
    let (layout, local) = busybox(&scratch.0);
    let mut reg = Registry::start(&scratch.0.join("registry"), None, None).expect("starting the registry");
    let addr = reg.addr();
    assert_eq!(addr, format!("127.0.0.1:{}", reg.port()));
    let v2 = http_get(&addr, "/v2/", &[]).expect("GET /v2/");
    assert_eq!((v2.status, v2.header("Docker-Distribution-Api-Version")), (200, Some("registry/2.0")));

    // OCI: the layout's manifest byte for byte.
    let pushed = reg.push(&layout, "busybox:1.36", Format::Oci).expect("pushing busybox:1.36");
    assert_eq!(pushed, local, "an OCI push keeps the layout's manifest digest");
    let (digest, manifest) = served(&reg, "busybox", "1.36", MEDIA_MANIFEST);
    assert_eq!(digest, pushed);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_LAYER_TAR_GZIP);
    let raw = reg.inspect_raw("busybox:1.36").expect("skopeo inspect --raw");
    assert_eq!(oci::sha256_digest(&raw), pushed, "skopeo reads the same manifest");
    // By digest too; and a client that does not accept OCI is not given it.
    assert_eq!(reg.manifest("busybox", &pushed).expect("GET by digest").status, 200);
    let docker_only = reg
        .get("/v2/busybox/manifests/1.36", &[("Accept", MEDIA_DOCKER_MANIFEST)])
        .expect("GET manifest as Docker");
    assert_eq!(docker_only.status, 404, "{}", docker_only.text());

    // Docker schema 2: rewritten media types, the same blobs.
    let pushed_v2 = reg.push(&layout, "busybox-v2:1.36", Format::DockerV2).expect("pushing busybox-v2");
    assert_ne!(pushed_v2, local);
    let (digest_v2, manifest_v2) = served(&reg, "busybox-v2", "1.36", MEDIA_DOCKER_MANIFEST);
    assert_eq!(digest_v2, pushed_v2);
    assert_eq!(manifest_v2["mediaType"], MEDIA_DOCKER_MANIFEST);
    assert_eq!(manifest_v2["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    assert_eq!(manifest_v2["layers"][0]["mediaType"], MEDIA_DOCKER_LAYER);
    assert_eq!(manifest_v2["layers"][0]["digest"], manifest["layers"][0]["digest"]);
    assert_eq!(manifest_v2["config"]["digest"], manifest["config"]["digest"]);

    // The index: arm64 first, then the layout's amd64 manifest.
    let index = reg.push_index(&layout, "multi:1").expect("pushing multi:1");
    let (digest_index, listed) = served(&reg, "multi", "1", MEDIA_INDEX);
    assert_eq!(digest_index, index);
    let entries = listed["manifests"].as_array().expect("manifests");
    let platforms: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (e["platform"]["os"].as_str().unwrap_or(""), e["platform"]["architecture"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(platforms, [("linux", "arm64"), ("linux", "amd64")]);
    assert_eq!(entries[1]["digest"], local.as_str());
    for e in entries {
        assert_eq!(e["mediaType"], MEDIA_MANIFEST);
        let d = e["digest"].as_str().expect("digest");
        let (served_digest, _) = served(&reg, "multi", d, MEDIA_MANIFEST);
        assert_eq!(served_digest, d);
    }
    // The arm64 image is what it says: its config and its one small layer.
    let (_, arm64) = served(&reg, "multi", entries[0]["digest"].as_str().expect("digest"), MEDIA_MANIFEST);
    let config = reg
        .get(&format!("/v2/multi/blobs/{}", arm64["config"]["digest"].as_str().expect("config digest")), &[])
        .expect("GET the arm64 config");
    assert_eq!(config.status, 200);
    let config = json(&config.body);
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("arm64"), Some("linux")));
    let arm64_layer = arm64["layers"][0]["digest"].as_str().expect("layer digest").to_string();
    let blob = reg.get(&format!("/v2/multi/blobs/{arm64_layer}"), &[]).expect("GET the arm64 layer");
    assert_eq!((blob.status, oci::sha256_digest(&blob.body)), (200, arm64_layer.clone()));
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob.body[..]).read_to_end(&mut tar).expect("gunzipping the arm64 layer");
    assert!(
        String::from_utf8_lossy(&tar).contains(ARM64_HELLO_TXT.trim_end()),
        "the arm64 layer's hello.txt"
    );

    // The registry's files: the layer's blob is where blob_path says, whole.
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer digest");
    let file = reg.blob_path(layer);
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(oci::sha256_digest(&bytes), layer);
    assert_eq!(Some(bytes.len() as u64), manifest["layers"][0]["size"].as_u64());

    // Stopped, nothing answers; started again on the same port and storage, it is all there.
    reg.stop();
    assert!(http_get(&addr, "/v2/", &[]).is_err(), "a stopped registry still answers");
    reg.restart().expect("restarting the registry");
    assert_eq!(reg.addr(), addr);
    assert_eq!(http_get(&addr, "/v2/", &[]).expect("GET /v2/ after the restart").status, 200);
    assert_eq!(served(&reg, "busybox", "1.36", MEDIA_MANIFEST).0, local);
    assert_eq!(served(&reg, "multi", "1", MEDIA_INDEX).0, index);

    // A damaged blob (one byte flipped, the size kept) is served as it is on disk.
    let damaged = reg.blob_path(&arm64_layer);
    let mut bytes = std::fs::read(&damaged).expect("reading the arm64 layer");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, &bytes).expect("damaging the arm64 layer");
    let blob = reg.get(&format!("/v2/multi/blobs/{arm64_layer}"), &[]).expect("GET the damaged layer");
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body.len(), bytes.len());
    assert_ne!(oci::sha256_digest(&blob.body), arm64_layer);
}

#[test]
fn with_a_password_anonymous_requests_are_refused_and_pushes_with_credentials_work() {
    let scratch = Scratch::new("auth");
    let (layout, local) = busybox(&scratch.0);
    let reg = Registry::start(&scratch.0.join("registry"), None, Some(("tester", "pass-word-1")))
        .expect("starting the registry with a password");
    let htpasswd = std::fs::read_to_string(scratch.0.join("registry/htpasswd")).expect("htpasswd");
    assert!(htpasswd.starts_with("tester:$2y$"), "bcrypt: {htpasswd}");

    let anonymous = http_get(&reg.addr(), "/v2/", &[]).expect("anonymous GET /v2/");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("WWW-Authenticate"), Some(format!("Basic realm=\"{REALM}\"").as_str()));
    // A wrong password is refused too; the right one lets the client in.
    let wrong = http_get(&reg.addr(), "/v2/", &[("Authorization", "Basic dGVzdGVyOndyb25n")]).expect("GET");
    assert_eq!(wrong.status, 401);
    assert_eq!(reg.get("/v2/", &[]).expect("GET /v2/ with the password").status, 200);

    let pushed = reg.push(&layout, "private/busybox:1.36", Format::Oci).expect("pushing with credentials");
    assert_eq!(pushed, local);
    assert_eq!(served(&reg, "private/busybox", "1.36", MEDIA_MANIFEST).0, local);
    let anonymous =
        http_get(&reg.addr(), "/v2/private/busybox/manifests/1.36", &[("Accept", MEDIA_MANIFEST)])
            .expect("anonymous GET manifest");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

#[test]
fn a_registry_that_cannot_listen_says_why() {
    let scratch = Scratch::new("taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let port = taken.local_addr().expect("its address").port();
    let err = match Registry::start(&scratch.0.join("registry"), Some(port), None) {
        Ok(_) => panic!("a registry started on a port that is taken"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("docker-registry exited") && err.contains("address already in use"), "{err}");
}
