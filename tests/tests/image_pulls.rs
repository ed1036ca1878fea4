//! sim-node pulling images for real: one control plane, one `sim-node --pull-images
//! --insecure-registry 127.0.0.1:PORT` and one `docker-registry` (plain HTTP on loopback)
//! holding the busybox image built from the host's static busybox, pushed with skopeo as an
//! OCI manifest, a Docker schema 2 manifest and a two-platform index. Pods name images on
//! that registry; what the node did is judged through kubectl (pod status, events, the Node's
//! `status.images`), a `kubectl get pods -w` kept running for the whole test (so that states
//! the node shows only briefly, such as ErrImagePull before ImagePullBackOff, are seen), and
//! the registry's access log (which requests reached it).
//!
//! Containers run in the simulated runtime: a pull decides whether and when they start.

use qemu::oci::{self, RunConfig, TarEntry};
use qemu::registry::{Format, Registry};
use regex::Regex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::cluster::*;

/// How long a pod may take to reach a state the test waits for.
const POD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the pod waiting for a registry that comes back may take to run: its pull
/// backs off 10 s, then 20 s.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the pod of the damaged image is watched for a start that must not come.
const NEVER_STARTS: Duration = Duration::from_secs(20);
/// The node's name.
const NODE: &str = "n1";

/// The (reason, message) of a pod's first container while it waits; empty strings when it
/// does not.
fn waiting(pod: &Value) -> (String, String) {
    let w = &first_container(pod)["state"]["waiting"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (s(&w["reason"]), s(&w["message"]))
}

/// A pod running `sh -c 'echo hi; sleep 3600'` in `image`, with `policy` as its
/// imagePullPolicy when given (else the API server's default for the image).
fn pod_yaml(name: &str, image: &str, policy: Option<&str>) -> String {
    let policy = policy.map(|p| format!("    imagePullPolicy: {p}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
{policy}    command: [\"sh\", \"-c\", \"echo hi; sleep 3600\"]
"
    )
}

fn create_pod(cp: &ControlPlane, logs: &Logs, dir: &Path, name: &str, image: &str, policy: Option<&str>) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, pod_yaml(name, image, policy)).expect("writing a pod file");
    let out = kubectl_logged(cp, logs, &["create", "-f", file.to_str().expect("UTF-8 path")]);
    assert!(out.contains(&format!("pod/{name} created")), "{out}{}", logs.dump());
}

/// Waits until `probe` accepts the pod `name`; returns the pod.
#[track_caller]
fn wait_pod(
    cp: &ControlPlane,
    logs: &Logs,
    name: &str,
    what: &str,
    timeout: Duration,
    probe: impl Fn(&Value) -> bool,
) -> Value {
    logs.wait_for(&format!("pod {name}: {what}"), timeout, || {
        let pod = get_json(cp, &["pod", name])?;
        if probe(&pod) {
            Ok(pod)
        } else {
            Err(serde_json::to_string_pretty(&pod["status"]).unwrap_or_default())
        }
    })
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && first_container(pod)["state"]["running"].is_object()
}

/// The events of the object `name`, oldest first. The node posts its events one at a time
/// in the order it records them, so creation order is resourceVersion order; none of the
/// events compared here is ever repeated, which would update it.
fn events(cp: &ControlPlane, name: &str) -> Result<Vec<Value>, String> {
    let selector = format!("involvedObject.name={name}");
    let list = get_json(cp, &["events", "--field-selector", &selector])?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    let rv = |e: &Value| e["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse::<u64>().ok());
    items.sort_by_key(|e| rv(e).unwrap_or(u64::MAX));
    Ok(items)
}

/// Waits until the events of `name` satisfy `probe`; returns them.
#[track_caller]
fn wait_events(
    cp: &ControlPlane,
    logs: &Logs,
    name: &str,
    what: &str,
    probe: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    logs.wait_for(&format!("events of {name}: {what}"), POD_TIMEOUT, || {
        let evs = events(cp, name)?;
        if probe(&evs) {
            Ok(evs)
        } else {
            Err(serde_json::to_string_pretty(&evs).unwrap_or_default())
        }
    })
}

fn reason(e: &Value) -> &str {
    e["reason"].as_str().unwrap_or("")
}

fn message(e: &Value) -> &str {
    e["message"].as_str().unwrap_or("")
}

/// `kubectl get pods -w -o json` for the whole test, its output in a file: every version of
/// every pod the server stored, however briefly. Killed on drop.
struct PodWatch {
    child: Child,
    out: PathBuf,
}

impl PodWatch {
    fn start(cp: &ControlPlane, dir: &Path) -> PodWatch {
        let out = dir.join("pods-watch.json");
        let file = std::fs::File::create(&out).expect("creating the watch output");
        let err = std::fs::File::create(dir.join("pods-watch.stderr")).expect("creating the watch log");
        let child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .arg("--cache-dir")
            .arg(cp.dir.join("kube-cache"))
            .env("HOME", &cp.dir)
            .args(["get", "pods", "-w", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("starting kubectl get pods -w");
        PodWatch { child, out }
    }

    /// Every version of the pod `name` seen so far, in order (a last object still being
    /// written is left out).
    fn versions(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .filter(|p| p["metadata"]["name"] == name)
            .collect()
    }

    /// The (reason, message) each version of `name` shows its first container waiting
    /// with, in order, repeats dropped.
    fn waiting_states(&self, name: &str) -> Vec<(String, String)> {
        let mut states: Vec<(String, String)> = Vec::new();
        for w in self.versions(name).iter().map(waiting) {
            if !w.0.is_empty() && states.last() != Some(&w) {
                states.push(w);
            }
        }
        states
    }

    /// Waits until the watch has shown `name` waiting with `first` and, later, with `then`;
    /// returns the message of `first`.
    #[track_caller]
    fn wait_reasons(&mut self, logs: &Logs, name: &str, first: &str, then: &str) -> String {
        logs.wait_for(&format!("pod {name}: {first} then {then} (watched)"), POD_TIMEOUT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the pod watch ended ({status})"));
            }
            let states = self.waiting_states(name);
            let at = states.iter().position(|(r, _)| r == first);
            match at {
                Some(i) if states[i..].iter().any(|(r, _)| r == then) => Ok(states[i].1.clone()),
                _ => Err(format!("{states:#?}")),
            }
        })
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the tail of the registry's log when the test fails (the cluster's logs are printed
/// by each failing step).
struct RegistryLogOnFailure(PathBuf);

impl Drop for RegistryLogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- registry log (last lines of {}) ---\n{tail}", self.0.display());
        }
    }
}

/// How many `GET /v2/REPO/manifests/REFERENCE` the registry has logged (its access log, one
/// line per request once it is answered).
fn manifest_gets(reg: &Registry, repo: &str, reference: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/manifests/{reference} HTTP/");
    std::fs::read_to_string(reg.log_path()).unwrap_or_default().matches(&needle).count()
}

/// A one-layer image of its own (no blob shared with busybox), whose layer can be damaged
/// without harming the other images of the registry. Returns its manifest digest.
fn small_image(layout: &Path) -> String {
    let tar = oci::tar_entries(&[
        TarEntry::Dir("etc", 0o755),
        TarEntry::File("etc/broken.txt", 0o644, b"this layer is damaged in the registry\n"),
    ])
    .expect("building the small layer");
    let run = RunConfig { cmd: Some(vec!["sh".into()]), ..RunConfig::default() };
    oci::write_layout(layout, &[tar], run).expect("writing the small layout")
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The manifest (or index) `repo:reference` as the registry serves it.
fn served_manifest(reg: &Registry, repo: &str, reference: &str) -> Value {
    let r = reg.manifest(repo, reference).unwrap_or_else(|e| panic!("GET manifest {repo}:{reference}: {e}"));
    assert_eq!(r.status, 200, "{repo}:{reference}: {}", r.text());
    json(&r.body)
}

/// Tags and digests, OCI and Docker manifests, an index, a missing tag, a damaged blob, a
/// registry that is down for a while, and the pull policies, against one cluster and one
/// registry.
#[test]
fn sim_node_pulls_from_a_real_registry() {
    let _slot = slot();
    let dir = TempDir::new("image-pulls");
    let d = &dir.0;
    qemu::setup::ensure(&[qemu::setup::BUSYBOX, qemu::setup::REGISTRY].concat())
        .unwrap_or_else(|e| panic!("{e}"));

    // The registry and its images, all pushed before the node starts.
    let layout = d.join("busybox");
    let local = oci::build_busybox_image(Path::new(qemu::setup::BUSYBOX_PATH), &layout)
        .expect("building the busybox layout");
    let mut reg = Registry::start(&d.join("registry"), None, None).expect("starting the registry");
    let _reg_log = RegistryLogOnFailure(reg.log_path());
    let addr = reg.addr();
    let digest = reg.push(&layout, "busybox:1.36", Format::Oci).expect("pushing busybox:1.36");
    assert_eq!(digest, local);
    let v2_digest = reg.push(&layout, "busybox-v2:1.36", Format::DockerV2).expect("pushing busybox-v2");
    let index_digest = reg.push_index(&layout, "multi:1").expect("pushing multi:1");
    assert_eq!(reg.push(&layout, "busybox:later", Format::Oci).expect("pushing busybox:later"), local);
    let small = d.join("small");
    let small_digest = small_image(&small);
    assert_eq!(reg.push(&small, "broken:1", Format::Oci).expect("pushing broken:1"), small_digest);

    let manifest = served_manifest(&reg, "busybox", "1.36");
    let image_bytes = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .chain([&manifest["config"]])
        .map(|l| l["size"].as_u64().expect("size"))
        .sum::<u64>();
    let index = served_manifest(&reg, "multi", "1");
    let platform_digest = |arch: &str| {
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .and_then(|m| m["digest"].as_str())
            .unwrap_or_else(|| panic!("no {arch} entry in {index}"))
            .to_string()
    };
    let (amd64, arm64) = (platform_digest("amd64"), platform_digest("arm64"));

    // broken:1 with one byte of its layer flipped in the registry's storage, its size kept.
    let layer = served_manifest(&reg, "broken", "1")["layers"][0]["digest"]
        .as_str()
        .expect("the layer's digest")
        .to_string();
    let blob = reg.blob_path(&layer);
    let mut bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&blob, &bytes).expect("damaging the layer");
    assert_ne!(oci::sha256_digest(&bytes), layer);

    // The cluster.
    let logs = Logs { server: d.join("server.stderr"), node: d.join("sim-node.log") };
    let cp = ControlPlane::start_with_stderr(d, ControlPlane::append_stderr(&logs.server));
    let _node = SimNode::start_with(
        &d.join("node.kubeconfig"),
        NODE,
        &logs.node,
        &["--pull-images", "--insecure-registry", &addr],
    );
    logs.wait_for("node Ready", NODE_READY_TIMEOUT, || {
        let n = get_json(&cp, &["node", NODE])?;
        let ready = n["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
    let mut watch = PodWatch::start(&cp, d);
    let img = |name: &str| format!("{addr}/{name}");

    let created = Instant::now();
    create_pod(&cp, &logs, d, "tagged", &img("busybox:1.36"), None);
    create_pod(&cp, &logs, d, "missing", &img("busybox:nope"), None);
    create_pod(&cp, &logs, d, "broken", &img("broken:1"), None);
    create_pod(&cp, &logs, d, "docker-v2", &img("busybox-v2:1.36"), None);
    create_pod(&cp, &logs, d, "multi", &img("multi:1"), None);
    create_pod(&cp, &logs, d, "never", &img("busybox:absent"), Some("Never"));

    // 1. By tag, an OCI manifest: the pod runs with the manifest's digest as its imageID,
    // after Pulling and a Pulled that gives the image's size (Node.status.images is checked
    // after step 5).
    let tagged = wait_pod(&cp, &logs, "tagged", "Running", POD_TIMEOUT, running);
    assert_eq!(first_container(&tagged)["imageID"], format!("{addr}/busybox@{digest}"), "{tagged}");
    assert_eq!(first_container(&tagged)["image"], img("busybox:1.36"), "{tagged}");
    let pulled = Regex::new(&format!(
        r#"^Successfully pulled image "{}" in [0-9.]+s \([0-9.]+s including waiting\)\. Image size: ([0-9]+) bytes\.$"#,
        regex::escape(&img("busybox:1.36"))
    ))
    .expect("regex");
    let evs = wait_events(&cp, &logs, "tagged", "Pulling, Pulled, Started", |evs| {
        ["Pulling", "Pulled", "Started"].iter().all(|r| evs.iter().any(|e| reason(e) == *r))
    });
    let at = |r: &str| evs.iter().position(|e| reason(e) == r).expect("the event");
    assert!(at("Pulling") < at("Pulled"), "Pulling after Pulled: {evs:#?}");
    assert_eq!(message(&evs[at("Pulling")]), format!("Pulling image \"{}\"", img("busybox:1.36")));
    let size: u64 = pulled
        .captures(message(&evs[at("Pulled")]))
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("Pulled says {:?}", message(&evs[at("Pulled")])));
    assert!(size > 0);
    assert_eq!(size, image_bytes, "the size is the config's and the layers' as the manifest gives them");
    assert!(
        manifest_gets(&reg, "busybox", "1.36") >= 1,
        "the registry saw no manifest request from the node"
    );

    // 3. A Docker schema 2 manifest, and the index: its linux/amd64 manifest is the one run,
    // not the index and not the arm64 entry that comes first.
    let v2 = wait_pod(&cp, &logs, "docker-v2", "Running", POD_TIMEOUT, running);
    assert_eq!(first_container(&v2)["imageID"], format!("{addr}/busybox-v2@{v2_digest}"), "{v2}");
    let multi = wait_pod(&cp, &logs, "multi", "Running", POD_TIMEOUT, running);
    let multi_id = first_container(&multi)["imageID"].as_str().unwrap_or("").to_string();
    assert_eq!(multi_id, format!("{addr}/multi@{amd64}"), "{multi}");
    assert!(!multi_id.ends_with(&index_digest) && !multi_id.ends_with(&arm64), "{multi_id}");

    // 8. Never, and the node does not have it.
    let never = wait_pod(&cp, &logs, "never", "ErrImageNeverPull", POD_TIMEOUT, |p| {
        waiting(p).0 == "ErrImageNeverPull"
    });
    assert_eq!(never["status"]["phase"], "Pending", "{never}");
    assert!(waiting(&never).1.contains("is not present with pull policy of Never"), "{never}");
    let evs = events(&cp, "never").expect("events of never");
    assert!(!evs.iter().any(|e| reason(e) == "Pulling"), "a Never pod pulled: {evs:#?}");
    assert_eq!(manifest_gets(&reg, "busybox", "absent"), 0, "a Never pod asked the registry");

    // 2. By digest, pulled even though the image is on the node (Always): a manifest request
    // by digest reaches the registry.
    let before = manifest_gets(&reg, "busybox", &digest);
    create_pod(&cp, &logs, d, "by-digest", &img(&format!("busybox@{digest}")), Some("Always"));
    let by_digest = wait_pod(&cp, &logs, "by-digest", "Running", POD_TIMEOUT, running);
    assert_eq!(first_container(&by_digest)["imageID"], format!("{addr}/busybox@{digest}"), "{by_digest}");
    wait_events(&cp, &logs, "by-digest", "Pulled", |evs| {
        evs.iter().any(|e| reason(e) == "Pulled" && message(e).starts_with("Successfully pulled image"))
    });
    assert!(manifest_gets(&reg, "busybox", &digest) > before, "no manifest request by digest");

    // 7. IfNotPresent, the image pulled by tag in step 1 (and by digest since): found on the
    // node, no new Pulling event, no new manifest request for the tag. The registry's access
    // log is reliable here: step 1 checked it shows the node's request, and nothing else
    // asks for busybox:1.36 meanwhile.
    let gets = manifest_gets(&reg, "busybox", "1.36");
    create_pod(&cp, &logs, d, "again", &img("busybox:1.36"), Some("IfNotPresent"));
    wait_pod(&cp, &logs, "again", "Running", POD_TIMEOUT, running);
    let present = format!("Container image \"{}\" already present on machine", img("busybox:1.36"));
    let evs = wait_events(&cp, &logs, "again", "Pulled, Started", |evs| {
        evs.iter().any(|e| reason(e) == "Pulled") && evs.iter().any(|e| reason(e) == "Started")
    });
    assert!(evs.iter().any(|e| reason(e) == "Pulled" && message(e) == present), "{evs:#?}");
    assert!(!evs.iter().any(|e| reason(e) == "Pulling"), "pulled again: {evs:#?}");
    assert_eq!(manifest_gets(&reg, "busybox", "1.36"), gets, "the registry was asked for busybox:1.36 again");

    // 4. A tag the registry does not have: ErrImagePull saying not found, then
    // ImagePullBackOff; the pod stays Pending; a Warning Failed names the image.
    let why = watch.wait_reasons(&logs, "missing", "ErrImagePull", "ImagePullBackOff");
    println!("missing tag: {why}");
    assert!(why.contains("not found"), "{why}");
    assert!(why.contains(&img("busybox:nope")), "{why}");
    let missing = get_json(&cp, &["pod", "missing"]).expect("pod missing");
    assert_eq!(missing["status"]["phase"], "Pending", "{missing}");
    let evs = wait_events(&cp, &logs, "missing", "Warning Failed naming the image", |evs| {
        evs.iter().any(|e| {
            e["type"] == "Warning" && reason(e) == "Failed" && message(e).contains(&img("busybox:nope"))
        })
    });
    assert!(evs.iter().any(|e| reason(e) == "BackOff"), "{evs:#?}");

    // 5. The damaged layer: the pull names the layer's digest, and the container never
    // starts.
    let why = watch.wait_reasons(&logs, "broken", "ErrImagePull", "ImagePullBackOff");
    println!("damaged layer: {why}");
    assert!(why.contains(&layer), "the message does not name the layer {layer}: {why}");
    wait_events(&cp, &logs, "broken", "a Failed event naming the layer", |evs| {
        evs.iter().any(|e| reason(e) == "Failed" && message(e).contains(&layer))
    });
    if let Some(rest) = NEVER_STARTS.checked_sub(created.elapsed()) {
        std::thread::sleep(rest);
    }
    let evs = events(&cp, "broken").expect("events of broken");
    assert!(!evs.iter().any(|e| reason(e) == "Started"), "the damaged image started: {evs:#?}");
    assert!(
        !watch.versions("broken").iter().any(|p| first_container(p)["state"]["running"].is_object()),
        "the damaged image ran"
    );
    let broken = get_json(&cp, &["pod", "broken"]).expect("pod broken");
    assert_eq!(broken["status"]["phase"], "Pending", "{broken}");

    // 1, continued (checked here, where the node has long had time for the status update
    // it makes every 10 s): the node lists the image by its tag, with the size the Pulled
    // event gave; what failed to pull is not listed.
    let node = logs.wait_for("busybox:1.36 in Node.status.images", POD_TIMEOUT, || {
        let n = get_json(&cp, &["node", NODE])?;
        let listed = n["status"]["images"].as_array().is_some_and(|is| {
            is.iter().any(|i| {
                i["names"].as_array().is_some_and(|ns| ns.iter().any(|x| *x == img("busybox:1.36")))
                    && i["sizeBytes"].as_u64() == Some(size)
            })
        });
        if listed {
            Ok(n)
        } else {
            Err(n["status"]["images"].to_string())
        }
    });
    println!("Node.status.images: {}", node["status"]["images"]);
    let names = node["status"]["images"].to_string();
    assert!(!names.contains("broken") && !names.contains("busybox:nope"), "{names}");

    // 6. The registry down, then up: the pull fails, backs off, and is retried.
    reg.stop();
    create_pod(&cp, &logs, d, "offline", &img("busybox:later"), Some("IfNotPresent"));
    let why = watch.wait_reasons(&logs, "offline", "ErrImagePull", "ImagePullBackOff");
    println!("registry down: {why}");
    assert!(why.contains("unreachable"), "{why}");
    reg.restart().expect("restarting the registry");
    let offline = wait_pod(&cp, &logs, "offline", "Running after the restart", RETRY_TIMEOUT, running);
    assert_eq!(first_container(&offline)["imageID"], format!("{addr}/busybox@{digest}"), "{offline}");
    let evs = wait_events(&cp, &logs, "offline", "Pulled", |evs| {
        evs.iter().any(|e| reason(e) == "Pulled" && message(e).starts_with("Successfully pulled image"))
    });
    let pulls: i64 =
        evs.iter().filter(|e| reason(e) == "Pulling").map(|e| e["count"].as_i64().unwrap_or(1)).sum();
    assert!(pulls >= 2, "one pull, no retry: {evs:#?}");
}
