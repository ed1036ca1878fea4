//! The hypervisor node pulls images from a real registry: one `cargo xtask cluster up
//! --nodes 1 --insecure-registry 127.0.0.1:P`, where P is a `docker-registry` this test
//! runs on a free port and pushes images to before the cluster starts. Judged through the
//! real kubectl and n1's console, in this order:
//!
//! 1. by tag (an OCI manifest): the pod runs and prints, its imageID is the repository
//!    digest the registry reports, its events are Pulling then Pulled (with the image's
//!    size), and Node.status.images lists the image;
//! 7. (with 1) a second pod of the same image, IfNotPresent, finds it already present: the
//!    console says the image was pulled once, and the second pod VM's frames are about one
//!    VM's memory, not that and the image again;
//! 2. by digest: a pod of `busybox@sha256:...` (an image with a layer of its own) runs;
//! 3. a Docker schema 2 manifest and a two-platform index (arm64 listed first) run busybox,
//!    the index's pod with the amd64 manifest's digest as its imageID;
//! 4. a missing tag: ErrImagePull saying not found, then ImagePullBackOff, phase Pending;
//! 5. a layer blob damaged in the registry's storage: the pull fails naming the layer, the
//!    container never starts, the node does not panic and stays Ready;
//! 6. the registry is stopped: a new pod backs off; restarted, the pod runs within 60 s;
//! 8. n1 stays Ready throughout; a SIGTERM stops the run with status 0 and leaves no
//!    emulator, control plane or registry running (the test's own registry is stopped too).

use qemu::image::target_dir;
use qemu::oci::{self, RunConfig, TarEntry};
use qemu::registry::{Format, Registry};
use regex::Regex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::emulator_slot;
use tests::up::{
    apply_pod, build_cluster_parts, cluster_markers, get_json, kubectl, nothing_left, pod_yaml, try_kubectl,
    wait_pod, Up, POD_TIMEOUT,
};

/// How long a pod whose image is broken is watched for a container start that must not come.
const NO_START_WATCH: Duration = Duration::from_secs(20);
/// How long a pod may take to run once its registry is back.
const BACK_TIMEOUT: Duration = Duration::from_secs(60);
/// A page frame, bytes.
const FRAME: u64 = 4096;
/// The frames the kernel may take between two pod VM starts besides the first VM and its
/// heap's growth (a few network buffers or page tables of its own).
const FRAME_SLACK: u64 = 64;
/// What the image with its own layer (pulled by digest) holds in `etc/pulled-by.txt`.
const PULLED_BY_TXT: &str = "pulled by digest\n";

/// The images this test pushes, with the digests the registry reports for them.
struct Pushed {
    /// `127.0.0.1:P`.
    addr: String,
    /// `busybox:1.36` (and `busybox:after-restart`), an OCI manifest.
    busybox: String,
    /// `busybox:digest-only`: busybox with a second layer holding `etc/pulled-by.txt`.
    marked: String,
    /// `busybox-v2:1.36`, the busybox layout as a Docker schema 2 manifest.
    docker_v2: String,
    /// `busybox-multi:1.36`, the index.
    index: String,
    /// The index's linux/amd64 entry.
    index_amd64: String,
    /// The layer of `corrupt:1` whose blob was damaged.
    damaged_layer: String,
}

/// The busybox run config (as [`oci::build_busybox_image`] writes it).
fn busybox_run() -> RunConfig {
    RunConfig {
        entrypoint: None,
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin:/usr/bin".into()]),
        working_dir: Some("/".into()),
    }
}

/// An OCI layout at `out`: the busybox layer and a second layer of `extra` files.
fn busybox_with(out: &Path, extra: &[TarEntry<'_>]) -> String {
    let bin = std::fs::read(qemu::setup::BUSYBOX_PATH).expect("reading the host's busybox");
    let base = oci::busybox_layer(&bin).expect("the busybox layer");
    let top = oci::tar_entries(extra).expect("the extra layer");
    oci::write_layout(out, &[base, top], busybox_run()).expect("writing a layout")
}

/// Text that gzip cannot shrink much (a linear congruential sequence of letters), so a
/// layer of it is a blob of some size.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            b'a' + ((x >> 24) % 26) as u8
        })
        .collect()
}

/// The layout directories and the registry under `dir`: every image pushed, the damaged
/// one's layer flipped in the registry's storage.
fn push_images(dir: &Path) -> (Registry, Pushed) {
    qemu::setup::ensure(&[qemu::setup::BUSYBOX, qemu::setup::REGISTRY].concat())
        .unwrap_or_else(|e| panic!("{e}"));
    let busybox_dir = dir.join("busybox");
    let local = oci::build_busybox_image(Path::new(qemu::setup::BUSYBOX_PATH), &busybox_dir)
        .expect("building the busybox layout");
    // Pulled by digest: an image of its own, so its digest is not one n1 already holds
    // (a pod of busybox@<1.36's digest> would find 1.36's image present and pull nothing).
    let marked_dir = dir.join("marked");
    busybox_with(
        &marked_dir,
        &[TarEntry::Dir("etc", 0o755), TarEntry::File("etc/pulled-by.txt", 0o644, PULLED_BY_TXT.as_bytes())],
    );
    // Damaged: a layer of its own on top of busybox's. The registry keeps one blob per
    // digest for every repository, so damaging busybox's layer would break every image here.
    let corrupt_dir = dir.join("corrupt");
    let filler = noise(256 * 1024);
    busybox_with(
        &corrupt_dir,
        &[TarEntry::Dir("etc", 0o755), TarEntry::File("etc/filler.txt", 0o644, &filler)],
    );

    let reg = Registry::start(&dir.join("registry"), None, None)
        .unwrap_or_else(|e| panic!("starting the registry: {e}"));
    let push = |layout: &Path, tag: &str, format: Format| {
        reg.push(layout, tag, format).unwrap_or_else(|e| panic!("pushing {tag}: {e}"))
    };
    let busybox = push(&busybox_dir, "busybox:1.36", Format::Oci);
    assert_eq!(busybox, local, "an OCI push keeps the layout's digest");
    assert_eq!(push(&busybox_dir, "busybox:after-restart", Format::Oci), busybox);
    let marked = push(&marked_dir, "busybox:digest-only", Format::Oci);
    let docker_v2 = push(&busybox_dir, "busybox-v2:1.36", Format::DockerV2);
    let index = reg
        .push_index(&busybox_dir, "busybox-multi:1.36")
        .unwrap_or_else(|e| panic!("pushing the index: {e}"));
    let listed = reg.manifest("busybox-multi", "1.36").expect("GET the index");
    let listed: Value = serde_json::from_slice(&listed.body).expect("the index is JSON");
    let entries = listed["manifests"].as_array().cloned().unwrap_or_default();
    let arch = |e: &Value| e["platform"]["architecture"].as_str().unwrap_or("").to_string();
    assert_eq!(entries.iter().map(arch).collect::<Vec<_>>(), ["arm64", "amd64"], "{listed}");
    let index_amd64 = entries[1]["digest"].as_str().unwrap_or("").to_string();
    assert_eq!(index_amd64, busybox, "the index's amd64 entry is the busybox manifest");

    push(&corrupt_dir, "corrupt:1", Format::Oci);
    let manifest = reg.manifest("corrupt", "1").expect("GET corrupt:1");
    let manifest: Value = serde_json::from_slice(&manifest.body).expect("the manifest is JSON");
    let damaged_layer = manifest["layers"][1]["digest"].as_str().expect("a second layer").to_string();
    let file = reg.blob_path(&damaged_layer);
    let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("damaging {}: {e}", file.display()));
    assert_ne!(oci::sha256_digest(&bytes), damaged_layer);
    let addr = reg.addr();
    (reg, Pushed { addr, busybox, marked, docker_v2, index, index_amd64, damaged_layer })
}

/// Polls `probe` every half second until it yields a value; a failure after `timeout`
/// shows what it last saw and everything `cluster up` printed.
#[track_caller]
fn wait_until<T>(up: &Up, what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen:\n{last}\n{}", up.output())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `kubectl describe pod NAME` (or why it failed), for failure messages.
fn describe(kc: &str, name: &str) -> String {
    try_kubectl(kc, &["describe", "pod", name]).unwrap_or_else(|e| e)
}

/// Panics with `msg`, the pod's description and the run's output unless `ok`.
#[track_caller]
fn check(ok: bool, up: &Up, kc: &str, pod: &str, msg: &str) {
    if !ok {
        panic!("{msg}\n{}\n{}", describe(kc, pod), up.output());
    }
}

/// One event of a pod: reason and message, in the order the node recorded them (an event's
/// name is `POD.HEX` with the node's clock in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    seq: u128,
    reason: String,
    message: String,
}

/// Pod `name`'s events, oldest first.
fn events(kc: &str, name: &str) -> Vec<Event> {
    let selector = format!("involvedObject.name={name}");
    let list = get_json(kc, &["events", "--field-selector", &selector]).unwrap_or_default();
    let mut out: Vec<Event> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Event {
            seq: e["metadata"]["name"]
                .as_str()
                .and_then(|n| n.rsplit_once('.'))
                .and_then(|(_, hex)| u128::from_str_radix(hex, 16).ok())
                .unwrap_or(0),
            reason: e["reason"].as_str().unwrap_or("").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    out.sort_by_key(|e| e.seq);
    out
}

/// Pod `name`'s first container status.
fn container_status(kc: &str, name: &str) -> Value {
    get_json(kc, &["pod", name]).map(|p| p["status"]["containerStatuses"][0].clone()).unwrap_or_default()
}

/// Asserts n1 is Ready (its Ready condition True).
#[track_caller]
fn assert_ready(up: &Up, kc: &str, when: &str) {
    let node =
        get_json(kc, &["node", "n1"]).unwrap_or_else(|e| panic!("reading n1 {when}: {e}\n{}", up.output()));
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or("").to_string());
    assert_eq!(ready.as_deref(), Some("True"), "n1 is not Ready {when}: {node}\n{}", up.output());
}

/// The console lines saying the node pulled `reference`: `node: pulled REF: C bytes from the
/// registry in T ms, held inflated as N bytes in F frames: ID`.
fn pulled_lines(up: &Up, reference: &str) -> Vec<String> {
    let needle = format!("node: pulled {reference}: ");
    up.lines().into_iter().filter(|l| l.starts_with("n1| ") && l.contains(&needle)).collect()
}

/// The size the node holds and the id a pull line gives.
fn pulled_fields(line: &str) -> (u64, String) {
    let re = Regex::new(
        r"node: pulled \S+: \d+ bytes from the registry in \d+ ms, held inflated as (\d+) bytes in \d+ frames: (\S+)$",
    )
    .expect("the pull line pattern is valid");
    let c = re.captures(line).unwrap_or_else(|| panic!("not a pull line: {line:?}"));
    (c[1].parse().expect("digits"), c[2].to_string())
}

/// The start line of pod `name`'s VM on n1: its index and the frame counts just before its
/// memory was taken.
fn vm_start(up: &mut Up, name: &str) -> (u64, u64, u64) {
    let re = Regex::new(&format!(
        r"^n1\| node: pod VM vm(\d+) for default\.{name} starts: frames_free=(\d+) kernel_frames=(\d+)$"
    ))
    .expect("the start line pattern is valid");
    let line = up.wait_for(|l| re.is_match(l), &format!("the start line of {name}'s VM"), POD_TIMEOUT);
    let c = re.captures(&line).expect("the line matched");
    let n = |i: usize| c[i].parse::<u64>().expect("digits");
    (n(1), n(2), n(3))
}

/// What VM `vm` holds once its vCPU exists (its `vm<i>: memory` line): guest memory bytes
/// and overhead bytes (nested tables, vCPU and FPU state).
fn vm_memory(up: &mut Up, vm: u64) -> (u64, u64) {
    let re = Regex::new(&format!(r"^n1\| vm{vm}: memory guest_bytes=(\d+) overhead_bytes=(\d+)$"))
        .expect("the memory line pattern is valid");
    let line = up.wait_for(|l| re.is_match(l), &format!("vm{vm}'s memory line"), POD_TIMEOUT);
    let c = re.captures(&line).expect("the line matched");
    (c[1].parse().expect("digits"), c[2].parse().expect("digits"))
}

/// The frame census (frames_free, kernel_frames) of the last pod VM line on n1, once every
/// pod VM started has been released (so it is the count with no VM running).
fn census_with_no_vm(up: &mut Up) -> (u64, u64) {
    let re = Regex::new(
        r"^n1\| node: pod VM vm\d+ (?:for \S+ starts|released): frames_free=(\d+) kernel_frames=(\d+)$",
    )
    .expect("the census pattern is valid");
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let lines = up.lines();
        let starts =
            lines.iter().filter(|l| l.starts_with("n1| node: pod VM ") && l.contains(" starts: ")).count();
        let released =
            lines.iter().filter(|l| l.starts_with("n1| node: pod VM ") && l.contains(" released: ")).count();
        if starts == released {
            let last = lines.iter().rev().find_map(|l| re.captures(l)).expect("a pod VM ran before");
            return (last[1].parse().expect("digits"), last[2].parse().expect("digits"));
        }
        assert!(Instant::now() < deadline, "{starts} pod VMs started, {released} released\n{}", up.output());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pod of the test: `pod_yaml` on n1 with grace period 2, and `extra` container fields.
fn pod(kc: &str, name: &str, policy: &str, image: &str, script: &str, extra: &str) {
    let yaml = pod_yaml(name, policy, 2, image, script, Some("n1")) + extra;
    apply_pod(kc, &yaml, name);
}

/// Memory limit for the pods that end at once, so they take little of the node.
const SMALL: &str = "    resources: {limits: {memory: 32Mi}}\n";

/// 1 and 7: a pod by tag pulls the image; a second pod of it finds it present and shares
/// its frames.
fn by_tag_then_shared(up: &mut Up, kc: &str, p: &Pushed) {
    let image = format!("{}/busybox:1.36", p.addr);
    pod(kc, "tagged", "Never", &image, "echo pulled-ok; cat /etc/hostname 2>/dev/null; sleep 3600", "");
    let (vm_a, free_a, kernel_a) = vm_start(up, "tagged");
    wait_pod(up, kc, "tagged", "{.status.phase}", "Running", |s| s == "Running");
    up.wait_line_containing("n1| default.tagged/main> pulled-ok", POD_TIMEOUT);
    let logs = kubectl(kc, &["logs", "tagged"]);
    check(logs.starts_with("pulled-ok\n"), up, kc, "tagged", &format!("kubectl logs tagged: {logs:?}"));

    let want_id = format!("{}/busybox@{}", p.addr, p.busybox);
    let status = container_status(kc, "tagged");
    check(
        status["imageID"] == want_id.as_str(),
        up,
        kc,
        "tagged",
        &format!("imageID, want {want_id}: {status}"),
    );
    let pulls = pulled_lines(up, &image);
    check(pulls.len() == 1, up, kc, "tagged", &format!("pull lines for {image}: {pulls:?}"));
    let (size, id) = pulled_fields(&pulls[0]);
    assert_eq!(id, want_id, "the console's id of the pulled image");

    // Pulling, then Pulled with the size the console gives.
    let evs = events(kc, "tagged");
    let at =
        |reason: &str, text: &str| evs.iter().position(|e| e.reason == reason && e.message.contains(text));
    let pulling = at("Pulling", &format!("Pulling image \"{image}\""));
    let pulled = at("Pulled", &format!("Successfully pulled image \"{image}\" in "));
    check(
        matches!((pulling, pulled), (Some(a), Some(b)) if a < b),
        up,
        kc,
        "tagged",
        &format!("events Pulling then Pulled: {evs:#?}"),
    );
    let pulled_msg = &evs[pulled.unwrap_or_default()].message;
    assert!(
        pulled_msg.ends_with(&format!("Image size: {size} bytes.")),
        "{pulled_msg} (console: {size} bytes)"
    );

    // Node.status.images lists it under the name the pod gave and its digest.
    wait_until(up, "n1's status listing the pulled image", POD_TIMEOUT, || {
        let node = get_json(kc, &["node", "n1"])?;
        let images = node["status"]["images"].as_array().cloned().unwrap_or_default();
        let named = |n: &str| {
            images.iter().any(|i| i["names"].as_array().is_some_and(|ns| ns.iter().any(|x| x == n)))
        };
        if named(&image) && named(&want_id) {
            Ok(())
        } else {
            Err(format!("{:#}", node["status"]["images"]))
        }
    });

    // 7: the same image again, IfNotPresent: no second pull.
    pod(kc, "shared", "Never", &image, "echo shared-ok; sleep 3600", "    imagePullPolicy: IfNotPresent\n");
    let (vm_b, free_b, kernel_b) = vm_start(up, "shared");
    wait_pod(up, kc, "shared", "{.status.phase}", "Running", |s| s == "Running");
    up.wait_line_containing("n1| default.shared/main> shared-ok", POD_TIMEOUT);
    let evs = events(kc, "shared");
    let present = format!("Container image \"{image}\" already present on machine");
    check(
        evs.iter().any(|e| e.reason == "Pulled" && e.message == present),
        up,
        kc,
        "shared",
        &format!("no `{present}` event: {evs:#?}"),
    );
    check(!evs.iter().any(|e| e.reason == "Pulling"), up, kc, "shared", &format!("a second pull: {evs:#?}"));
    let pulls = pulled_lines(up, &image);
    assert_eq!(pulls.len(), 1, "the image was pulled more than once: {pulls:?}\n{}", up.output());
    assert_eq!(container_status(kc, "shared")["imageID"], want_id.as_str());

    // The frames. A pod VM's start line gives frames_free and kernel_frames just before its
    // memory is taken; its `memory` line what it holds once its vCPU exists: guest memory
    // plus overhead (nested page tables, which also map the image's layers read-only at
    // their frames, and vCPU and FPU state). The pulled image is held in frames of its
    // own before A's VM started, so between A's start line and B's the free frames went
    // down by what A's VM holds and by whatever the kernel's heap grew meanwhile (counted
    // in kernel_frames), and by nothing else. Had B's VM copied the image, the drop would
    // be larger by the image's frames (its layers' bytes, plus crx-guest).
    let (guest_a, overhead_a) = vm_memory(up, vm_a);
    let (guest_b, overhead_b) = vm_memory(up, vm_b);
    let vm_frames = (guest_a + overhead_a).div_ceil(FRAME);
    let image_frames = size.div_ceil(FRAME);
    let fell = free_a.checked_sub(free_b).unwrap_or_else(|| {
        panic!("frames_free went up from {free_a} (vm{vm_a}) to {free_b} (vm{vm_b})\n{}", up.output())
    });
    let heap = kernel_b.saturating_sub(kernel_a);
    eprintln!(
        "frames: vm{vm_a} (tagged) starts with {free_a} free ({kernel_a} kernel) and holds {vm_frames} \
         ({guest_a} guest + {overhead_a} overhead bytes); vm{vm_b} (shared) starts with {free_b} free \
         ({kernel_b} kernel) and holds {} frames; drop {fell} = {vm_frames} + heap {heap} + {} other; \
         the image is {size} bytes = {image_frames} frames",
        (guest_b + overhead_b).div_ceil(FRAME),
        fell as i64 - vm_frames as i64 - heap as i64,
    );
    assert!(
        fell + FRAME_SLACK >= vm_frames + heap && fell <= vm_frames + heap + FRAME_SLACK,
        "the free frames went down by {fell} between vm{vm_a}'s start and vm{vm_b}'s, not about the \
         {vm_frames} vm{vm_a} holds (+ {heap} heap)\n{}",
        up.output()
    );
    assert!(
        fell < vm_frames + image_frames,
        "the free frames went down by {fell} between the two VMs of one image: vm{vm_a}'s {vm_frames} \
         and the image's {image_frames} again\n{}",
        up.output()
    );
    kubectl(kc, &["delete", "pod", "tagged", "shared", "--wait=false"]);
}

/// 2 and 3: by digest, a Docker schema 2 manifest, and an index whose amd64 image is chosen.
fn digest_docker_and_index(up: &mut Up, kc: &str, p: &Pushed) {
    let runs = [
        ("bydigest", format!("{}/busybox@{}", p.addr, p.marked), "cat /etc/pulled-by.txt; echo digest-ok"),
        ("dockerv2", format!("{}/busybox-v2:1.36", p.addr), "echo v2-ok"),
        ("multiarch", format!("{}/busybox-multi:1.36", p.addr), "cat /etc/hello.txt"),
    ];
    for (name, image, script) in &runs {
        pod(kc, name, "Never", image, script, SMALL);
    }
    let ids = [
        format!("{}/busybox@{}", p.addr, p.marked),
        format!("{}/busybox-v2@{}", p.addr, p.docker_v2),
        format!("{}/busybox-multi@{}", p.addr, p.index_amd64),
    ];
    let logs = [format!("{PULLED_BY_TXT}digest-ok\n"), "v2-ok\n".to_string(), oci::HELLO_TXT.to_string()];
    for (((name, image, _), id), log) in runs.iter().zip(&ids).zip(&logs) {
        wait_pod(up, kc, name, "{.status.phase}", "Succeeded", |s| s == "Succeeded");
        let status = container_status(kc, name);
        check(status["state"]["terminated"]["exitCode"] == 0, up, kc, name, &format!("{name}: {status}"));
        check(
            status["imageID"] == id.as_str(),
            up,
            kc,
            name,
            &format!("{name}'s imageID, want {id}: {status}"),
        );
        let got = kubectl(kc, &["logs", name]);
        check(&got == log, up, kc, name, &format!("kubectl logs {name}: {got:?}, want {log:?}"));
        let pulls = pulled_lines(up, image);
        check(pulls.len() == 1, up, kc, name, &format!("pull lines for {image}: {pulls:?}"));
        assert_eq!(pulled_fields(&pulls[0]).1, *id);
    }
    assert_ne!(p.index, p.index_amd64);
    let multi = container_status(kc, "multiarch");
    assert!(
        !multi["imageID"].as_str().unwrap_or("").contains(&p.index),
        "the index's digest as imageID: {multi}"
    );
    kubectl(kc, &["delete", "pod", "bydigest", "dockerv2", "multiarch", "--wait=false"]);
}

/// What a pod's watcher saw of its first container's waiting states and its phases.
#[derive(Debug, Default)]
struct Seen {
    waiting: Vec<(String, String)>,
    phases: Vec<String>,
    running: bool,
}

impl Seen {
    /// Notes the pod's state now.
    fn look(&mut self, kc: &str, name: &str) {
        let Ok(pod) = get_json(kc, &["pod", name]) else { return };
        let c = &pod["status"]["containerStatuses"][0];
        if let Some(reason) = c["state"]["waiting"]["reason"].as_str() {
            let w = (reason.to_string(), c["state"]["waiting"]["message"].as_str().unwrap_or("").to_string());
            if self.waiting.last() != Some(&w) {
                self.waiting.push(w);
            }
        }
        self.running |= !c["state"]["running"].is_null() || !c["state"]["terminated"].is_null();
        let phase = pod["status"]["phase"].as_str().unwrap_or("").to_string();
        if self.phases.last() != Some(&phase) {
            self.phases.push(phase);
        }
    }
}

/// 4 and 5: a missing tag, and a layer damaged in the registry.
fn missing_tag_and_damaged_layer(up: &mut Up, kc: &str, p: &Pushed) {
    let missing = format!("{}/busybox:no-such-tag", p.addr);
    let damaged = format!("{}/corrupt:1", p.addr);
    pod(kc, "missing", "Never", &missing, "echo must not run", SMALL);
    pod(kc, "damaged", "Never", &damaged, "echo must not run", SMALL);
    let (mut m, mut d) = (Seen::default(), Seen::default());
    // Both watched together: the missing tag until it showed ErrImagePull saying not found
    // and then ImagePullBackOff; the damaged image for NO_START_WATCH after its pull first
    // failed naming the layer (in its waiting message or a Failed event).
    let named = |seen: &Seen, evs: &[Event]| {
        seen.waiting.iter().any(|(_, msg)| msg.contains(&p.damaged_layer))
            || evs.iter().any(|e| e.reason == "Failed" && e.message.contains(&p.damaged_layer))
    };
    let mut damaged_failed: Option<Instant> = None;
    let mut missing_done = false;
    let deadline = Instant::now() + POD_TIMEOUT;
    while !missing_done || damaged_failed.is_none_or(|t| t.elapsed() < NO_START_WATCH) {
        if !missing_done {
            m.look(kc, "missing");
            let err = m.waiting.iter().position(|(r, msg)| r == "ErrImagePull" && msg.contains("not found"));
            missing_done = err.is_some_and(|i| m.waiting[i..].iter().any(|(r, _)| r == "ImagePullBackOff"));
        }
        d.look(kc, "damaged");
        if damaged_failed.is_none() && named(&d, &events(kc, "damaged")) {
            damaged_failed = Some(Instant::now());
        }
        if Instant::now() >= deadline {
            let what = format!("missing: {m:?}\ndamaged: {d:?}\n{}", describe(kc, "damaged"));
            check(false, up, kc, "missing", &what);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("missing: waiting {:?}, phases {:?}", m.waiting, m.phases);
    // The first failure is what the status showed after the first pull, not only a later
    // one: it stays for kubelet-lite's PULL_ERROR_SHOWN_SECS.
    let first = m.waiting.iter().find(|(r, _)| r != "ContainerCreating").map(|(r, _)| r.as_str());
    check(
        first == Some("ErrImagePull"),
        up,
        kc,
        "missing",
        &format!("the first failure was not shown: {m:?}"),
    );
    check(
        !m.running && m.phases.iter().all(|s| s == "Pending"),
        up,
        kc,
        "missing",
        &format!("missing: {m:?}"),
    );
    let evs = events(kc, "missing");
    check(
        evs.iter().any(|e| e.reason == "Failed" && e.message.contains("not found")),
        up,
        kc,
        "missing",
        &format!("no Failed event saying not found: {evs:#?}"),
    );

    // The damaged layer: the container never started.
    let evs = events(kc, "damaged");
    eprintln!("damaged: waiting {:?}, phases {:?}, events {evs:?}", d.waiting, d.phases);
    check(
        !evs.iter().any(|e| e.reason == "Started"),
        up,
        kc,
        "damaged",
        &format!("the container started: {evs:#?}"),
    );
    check(
        !d.running && d.phases.iter().all(|s| s == "Pending"),
        up,
        kc,
        "damaged",
        &format!("damaged: {d:?}"),
    );
    let starts = up.lines().iter().filter(|l| l.contains(" for default.damaged starts: ")).count();
    assert_eq!(starts, 0, "a VM was started for the damaged image\n{}", up.output());
    let pulls = pulled_lines(up, &damaged);
    assert!(pulls.is_empty(), "the damaged image was taken: {pulls:?}");
    assert!(!up.output().contains("KERNEL PANIC"), "n1 panicked\n{}", up.output());
    assert_ready(up, kc, "after the damaged pull");
    kubectl(kc, &["delete", "pod", "missing", "damaged", "--wait=false"]);
}

/// 6: the registry is stopped; a pod backs off; restarted, the pod runs.
fn registry_comes_back(up: &mut Up, kc: &str, reg: &mut Registry, p: &Pushed) {
    let image = format!("{}/busybox:after-restart", p.addr);
    let (free_before, kernel_before) = census_with_no_vm(up);
    reg.stop();
    pod(kc, "comeback", "Never", &image, "echo back-ok; sleep 3600", SMALL);
    let mut seen = Seen::default();
    wait_until(up, "comeback in ImagePullBackOff", POD_TIMEOUT, || {
        seen.look(kc, "comeback");
        if seen.waiting.iter().any(|(r, _)| r == "ImagePullBackOff") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    eprintln!("comeback while the registry is down: {seen:?}");
    check(!seen.running, up, kc, "comeback", &format!("comeback ran without its registry: {seen:?}"));
    reg.restart().unwrap_or_else(|e| panic!("restarting the registry: {e}"));
    let back = Instant::now();
    let deadline = back + BACK_TIMEOUT;
    loop {
        let phase = kubectl(kc, &["get", "pod", "comeback", "-o", "jsonpath={.status.phase}"]);
        if phase == "Running" {
            break;
        }
        check(
            Instant::now() < deadline,
            up,
            kc,
            "comeback",
            &format!("comeback is {phase} {BACK_TIMEOUT:?} after the registry came back"),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("comeback: Running {:.1} s after the registry came back", back.elapsed().as_secs_f64());
    up.wait_line_containing("n1| default.comeback/main> back-ok", POD_TIMEOUT);
    // The new tag names the manifest 1.36 named: the node pulled it, and the frames 1.36's
    // image holds serve it too. With no VM running, frames_free + kernel_frames changes
    // only when someone other than the kernel's heap takes frames (see the frame comment
    // in by_tag_then_shared); from before the pull to the start of comeback's VM nothing
    // else did, so the pull took none (its layers alone would be about 500 frames).
    let pulls = pulled_lines(up, &image);
    assert_eq!(pulls.len(), 1, "pull lines for {image}: {pulls:?}\n{}", up.output());
    let (size, _) = pulled_fields(&pulls[0]);
    let (_, free_at, kernel_at) = vm_start(up, "comeback");
    let taken = (free_before + kernel_before).saturating_sub(free_at + kernel_at);
    eprintln!(
        "frames: {free_before} free + {kernel_before} kernel before the pull of {image}, {free_at} + \
         {kernel_at} when comeback's VM starts: {taken} taken (the image is {} frames of layers)",
        size.div_ceil(FRAME)
    );
    assert!(
        taken <= FRAME_SLACK,
        "pulling another tag of a held manifest took {taken} frames\n{}",
        up.output()
    );
    let id = format!("{}/busybox@{}", p.addr, p.busybox);
    assert_eq!(container_status(kc, "comeback")["imageID"], id.as_str());
    kubectl(kc, &["delete", "pod", "comeback", "--wait=false"]);
}

/// Runs one scenario, says how long it took, and checks n1 is still Ready.
fn scenario(up: &mut Up, kc: &str, name: &str, f: impl FnOnce(&mut Up)) {
    let started = Instant::now();
    eprintln!("scenario: {name} ...");
    f(up);
    assert_ready(up, kc, &format!("after {name}"));
    eprintln!("scenario: {name} ok in {:.1} s", started.elapsed().as_secs_f64());
}

/// The scratch directory: layouts and the test's registry.
fn scratch() -> PathBuf {
    let dir = target_dir().join("cluster-pulls-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

#[test]
fn the_node_pulls_from_a_real_registry() {
    build_cluster_parts();
    let _slot = emulator_slot();
    let dir = scratch();
    let started = Instant::now();
    let (mut reg, pushed) = push_images(&dir);
    eprintln!("scenario: images pushed to {} in {:.1} s", pushed.addr, started.elapsed().as_secs_f64());
    let mut up = Up::start(&["--nodes", "1", "--insecure-registry", &pushed.addr]);
    let kc = up.kubeconfig();
    eprintln!("scenario: cluster up in {:.1} s", started.elapsed().as_secs_f64());
    assert_ready(&up, &kc, "at the start");
    scenario(&mut up, &kc, "by tag, and a second pod sharing the image", |up| {
        by_tag_then_shared(up, &kc, &pushed)
    });
    scenario(&mut up, &kc, "by digest, Docker v2 and an index", |up| {
        digest_docker_and_index(up, &kc, &pushed)
    });
    scenario(&mut up, &kc, "missing tag and damaged layer", |up| {
        missing_tag_and_damaged_layer(up, &kc, &pushed)
    });
    scenario(&mut up, &kc, "registry stopped and restarted", |up| {
        registry_comes_back(up, &kc, &mut reg, &pushed)
    });

    assert!(!up.output().contains("KERNEL PANIC"), "n1 panicked\n{}", up.output());
    up.stop_cleanly(1);
    reg.stop();
    let mut markers = cluster_markers(1);
    markers.push(target_dir().join("cluster").join("registry").display().to_string());
    markers.push(dir.join("registry").display().to_string());
    nothing_left(&markers, &up.output());
    eprintln!("scenario: all in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn pull_lines_are_read() {
    let line = "n1| node: pulled 127.0.0.1:5001/busybox:1.36: 1024 bytes from the registry in 12 ms, held \
                inflated as 2048 bytes in 1 frames: 127.0.0.1:5001/busybox@sha256:ab";
    assert_eq!(pulled_fields(line), (2048, "127.0.0.1:5001/busybox@sha256:ab".to_string()));
    assert_eq!(noise(4), noise(4));
    assert!(noise(64).iter().all(u8::is_ascii_lowercase));
}
