//! The hypervisor node's image credentials and image GC, as a user would see them, on one
//! node of 256 MiB with two real registries (`cluster up --insecure-registry`, twice):
//! - a registry that wants a password (htpasswd): a pod whose imagePullSecrets names a
//!   `kubectl create secret docker-registry` secret pulls and runs; one without gets
//!   ErrImagePull with the registry's 401;
//! - memory pressure: the node pulls two different images, runs a pod of the first to its
//!   end (the image is then unused), then a pod of the second whose memory limit takes the
//!   node past 85% in use. The node evicts the unused image (`node: image REF evicted ...` on
//!   its console, gone from Node.status.images) and never the one in use, which keeps
//!   running.

use std::path::Path;
use std::time::{Duration, Instant};
use tests::up::{apply_pod, build_cluster_parts, get_json, kubectl, wait_pod, Up};

/// An OCI layout at `dir` of the host's busybox with `pad` zero bytes after it (the program
/// is the same; the layer, and so the image, is another).
fn busybox_image(dir: &Path, pad: usize) {
    let mut bin = std::fs::read(qemu::setup::BUSYBOX_PATH).expect("reading busybox");
    bin.resize(bin.len() + pad, 0);
    let layer = qemu::oci::busybox_layer(&bin).expect("a busybox layer");
    let run = qemu::oci::RunConfig {
        entrypoint: None,
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin".into()]),
        working_dir: Some("/".into()),
    };
    let _ = std::fs::remove_dir_all(dir);
    qemu::oci::write_layout(dir, &[layer], run).expect("writing a layout");
}

fn pod(name: &str, image: &str, memory: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  \
         terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: {image}\n    \
         imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n    resources:\n      \
         limits: {{memory: {memory}}}\n"
    )
}

/// The names in Node.status.images.
fn node_images(kubeconfig: &str) -> Vec<String> {
    let node = get_json(kubeconfig, &["node", "n1"]).unwrap_or_default();
    node["status"]["images"]
        .as_array()
        .map(|a| {
            a.iter().flat_map(|i| i["names"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

/// A pod of `image` printing `text`, with `imagePullSecrets` naming `secret` when given.
fn private_pod(name: &str, image: &str, secret: Option<&str>, text: &str) -> String {
    let secrets = secret.map(|s| format!("  imagePullSecrets:\n  - name: {s}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n{secrets}  \
         containers:\n  - name: main\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo {text}\"]\n"
    )
}

#[test]
fn pull_secrets_reach_a_private_registry_and_unused_images_are_evicted_under_memory_pressure() {
    qemu::setup::ensure(qemu::setup::REGISTRY).expect("the registry's packages");
    qemu::setup::ensure(qemu::setup::BUSYBOX).expect("busybox-static");
    build_cluster_parts();
    let dir = qemu::image::target_dir().join("cluster-eviction-test");
    let (a, b) = (dir.join("a"), dir.join("b"));
    busybox_image(&a, 0);
    busybox_image(&b, 4096);
    let registry = qemu::registry::Registry::start(&dir.join("registry"), None, None).expect("a registry");
    registry.push(&a, "gc-a:1", qemu::registry::Format::Oci).expect("pushing a");
    registry.push(&b, "gc-b:1", qemu::registry::Format::Oci).expect("pushing b");
    let (ref_a, ref_b) = (format!("{}/gc-a:1", registry.addr()), format!("{}/gc-b:1", registry.addr()));
    let private =
        qemu::registry::Registry::start(&dir.join("private-registry"), None, Some(("puller", "s3cret")))
            .expect("a registry with a password");
    private.push(&a, "private:1", qemu::registry::Format::Oci).expect("pushing to the private registry");
    let ref_p = format!("{}/private:1", private.addr());

    let mut up = Up::start(&[
        "--mem",
        "256",
        "--insecure-registry",
        &registry.addr(),
        "--insecure-registry",
        &private.addr(),
    ]);
    let kubeconfig = up.kubeconfig();

    // A private registry: with the pod's pull secret the pull works, without it the reason
    // is the registry's 401.
    kubectl(
        &kubeconfig,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={}", private.addr()),
            "--docker-username=puller",
            "--docker-password=s3cret",
        ],
    );
    apply_pod(&kubeconfig, &private_pod("with-secret", &ref_p, Some("regcred"), "private-ok"), "with-secret");
    apply_pod(&kubeconfig, &private_pod("no-secret", &ref_p, None, "never"), "no-secret");
    wait_pod(&up, &kubeconfig, "with-secret", "{.status.phase}", "Succeeded", |p| p == "Succeeded");
    let logs = kubectl(&kubeconfig, &["logs", "with-secret"]);
    assert_eq!(logs.trim(), "private-ok", "{}", up.output());
    let why = wait_pod(
        &up,
        &kubeconfig,
        "no-secret",
        "{.status.containerStatuses[0].state.waiting.message}",
        "refused with the registry's 401",
        |m| m.contains("401"),
    );
    assert!(why.contains(&ref_p) && why.contains("unauthorized"), "{why}");
    assert_eq!(
        kubectl(&kubeconfig, &["get", "pod", "no-secret", "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );
    assert!(!up.output().contains("s3cret"), "the password reached the console:\n{}", up.output());
    kubectl(&kubeconfig, &["delete", "pod", "no-secret", "with-secret", "--grace-period=0"]);

    // Image a: pulled, run to its end, then unused.
    apply_pod(&kubeconfig, &pod("first", &ref_a, "32Mi", "echo first"), "first");
    wait_pod(&up, &kubeconfig, "first", "{.status.phase}", "Succeeded", |p| p == "Succeeded");
    up.wait_line_containing(&format!("node: pulled {ref_a}"), Duration::from_secs(30));
    // The finished pod's VM is stopped and its memory comes back.
    up.wait_line_containing("released: frames_free=", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(40);
    while !node_images(&kubeconfig).contains(&ref_a) {
        assert!(Instant::now() < deadline, "Node.status.images never listed {ref_a}:\n{}", up.output());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Image b, in a pod whose memory takes the node past 85% in use.
    apply_pod(&kubeconfig, &pod("second", &ref_b, "200Mi", "echo second; sleep 3600"), "second");
    wait_pod(&up, &kubeconfig, "second", "{.status.phase}", "Running", |p| p == "Running");
    // Least recently used first: the private registry's image (pulled before a) may go
    // first; a goes too, as its layer is then held by nothing else.
    let evicted = up.wait_line_containing(&format!("node: image {ref_a} evicted"), Duration::from_secs(60));
    assert!(evicted.contains("(more than 85% of the node's memory in use)"), "{evicted}");
    let out = up.output();
    assert!(!out.contains(&format!("image {ref_b} evicted")), "the image in use was evicted:\n{out}");
    // The node says so in its status; the pod of b runs on.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let images = node_images(&kubeconfig);
        if !images.contains(&ref_a) {
            assert!(images.contains(&ref_b), "{images:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ref_a} still in Node.status.images: {images:?}\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(kubectl(&kubeconfig, &["get", "pod", "second", "-o", "jsonpath={.status.phase}"]), "Running");
    up.stop_cleanly(1);
    drop(registry);
    drop(private);
}
