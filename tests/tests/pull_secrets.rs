//! Image pull secrets end to end: a `control-plane` child process, `sim-node` pulling images for
//! real (`--pull-images`, the registry reached over plain HTTP as `--insecure-registry`), and a
//! `docker-registry` that wants a password (htpasswd), holding the busybox image built from the
//! host's static busybox. Secrets are made with the real kubectl (`kubectl create secret
//! docker-registry`); pods name them in `imagePullSecrets`:
//!
//! - with the secret the node pulls with its credentials: the container runs, a Pulled event;
//! - without one the registry refuses the pull: ErrImagePull saying 401 unauthorized;
//! - naming a secret that does not exist: the FailedToRetrieveImagePullSecret Warning, then the
//!   pull without credentials and its 401.
//!
//! The node authorizer is checked over HTTP with the nodes' own tokens: a node reads the secrets
//! its pods use and no other, and may not list them.

use qemu::registry::{Format, Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tests::cluster::*;

/// How long a pod may take to reach the state the test waits for (a pull included).
const POD_TIMEOUT: Duration = Duration::from_secs(90);
/// The registry's user and password (the password must show in no log).
const USER: &str = "puller";
const PASSWORD: &str = "s3cret-Pull-pw";

/// A directory under `target/pull-secrets-tests/`, kept when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = qemu::image::target_dir().join("pull-secrets-tests").join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pull secret test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The events about the pod `pod`, oldest first.
fn events(cp: &ControlPlane, pod: &str) -> Result<Vec<Value>, String> {
    let selector = format!("involvedObject.kind=Pod,involvedObject.name={pod}");
    let list = get_json(cp, &["events", "--field-selector", &selector])?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| unix_seconds(e["firstTimestamp"].as_str().unwrap_or("")).unwrap_or(0));
    Ok(items)
}

fn event_text(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("{} {}: {}", e["type"], e["reason"], e["message"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pod of the image `image`, naming `secrets` in `imagePullSecrets` (bound to `node` when
/// given, else left to the scheduler).
fn pod_yaml(name: &str, image: &str, secrets: &[&str], node: Option<&str>) -> String {
    let mut y = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n");
    if let Some(n) = node {
        y.push_str(&format!("  nodeName: {n}\n"));
    }
    if !secrets.is_empty() {
        y.push_str("  imagePullSecrets:\n");
        for s in secrets {
            y.push_str(&format!("  - name: {s}\n"));
        }
    }
    y.push_str(&format!(
        "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    \
         command: [\"sh\", \"-c\", \"echo pulled; sleep 3600\"]\n"
    ));
    y
}

fn create(cp: &ControlPlane, logs: &Logs, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing a pod");
    kubectl_logged(cp, logs, &["create", "-f", file.to_str().expect("UTF-8 path")]);
}

/// Waits until the events about `pod` satisfy `done`; returns them.
fn wait_events(
    cp: &ControlPlane,
    logs: &Logs,
    pod: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    logs.wait_for(what, POD_TIMEOUT, || {
        let evs = events(cp, pod)?;
        if done(&evs) {
            Ok(evs)
        } else {
            Err(event_text(&evs))
        }
    })
}

fn is(e: &Value, reason: &str, message_part: &str) -> bool {
    e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(message_part))
}

/// GETs `paths` with the token of the kubeconfig `kubeconfig`, as a kubelet sends them; one
/// line per path: `STATUS REASON MESSAGE`.
fn as_node(cp: &ControlPlane, kubeconfig: &Path, paths: &[&str]) -> Vec<String> {
    let program = r#"
import http.client, json, ssl, sys, yaml
token = yaml.safe_load(open(sys.argv[1]))["users"][0]["user"]["token"]
host, port = sys.argv[2].rsplit("//", 1)[1].split(":")
ctx = ssl.create_default_context(cafile=sys.argv[3])
for path in sys.argv[4:]:
    method, path = path.split(" ", 1)
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=20)
    body = None
    if method == "POST":
        body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "made-by-node"}})
    c.request(method, path, body=body, headers={"Authorization": "Bearer " + token, "Accept": "application/json",
                                                "Content-Type": "application/json"})
    r = c.getresponse()
    b = json.loads(r.read())
    print(r.status, b.get("reason"), b.get("message"))
"#;
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.arg("-c").arg(program).arg(kubeconfig).arg(&cp.url).arg(cp.dir.join("pki/ca.crt")).args(paths);
    let o = run(cmd);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    o.stdout.lines().map(str::to_string).collect()
}

#[test]
fn pods_pull_from_a_private_registry_with_their_image_pull_secrets() {
    let _slot = slot();
    let scratch = Scratch::new();
    let dir = &scratch.0;
    qemu::setup::ensure(&[qemu::setup::BUSYBOX, qemu::setup::REGISTRY].concat()).expect("set-up");
    let layout = dir.join("busybox");
    qemu::oci::build_busybox_image(Path::new(qemu::setup::BUSYBOX_PATH), &layout)
        .expect("building the busybox layout");
    let reg =
        Registry::start(&dir.join("registry"), None, Some((USER, PASSWORD))).expect("starting the registry");
    let addr = reg.addr();
    // One tag per pod, so that every pod makes a pull of its own.
    for tag in ["with", "without", "missing"] {
        reg.push(&layout, &format!("private/busybox:{tag}"), Format::Oci).expect("pushing busybox");
    }
    let image = |tag: &str| format!("{addr}/private/busybox:{tag}");

    let state = dir.join("control-plane");
    std::fs::create_dir_all(&state).expect("creating the state directory");
    let logs = Logs { server: dir.join("server.stderr"), node: dir.join("sim-node.log") };
    let cp = ControlPlane::start_with_args(
        &state,
        "127.0.0.1:0",
        ControlPlane::append_stderr(&logs.server),
        &["--node", "n1", "--node", "n2"],
    );
    let n1 = state.join("nodes/n1.kubeconfig");
    let n2 = state.join("nodes/n2.kubeconfig");
    let _node = SimNode::start_with(&n1, "n1", &logs.node, &["--pull-images", "--insecure-registry", &addr]);
    logs.wait_for("node n1 Ready", NODE_READY_TIMEOUT, || {
        let n = get_json(&cp, &["node", "n1"])?;
        let ready = n["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });

    // The secret, as kubectl makes it, and kubectl's views of it.
    let made = kubectl_logged(
        &cp,
        &logs,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={addr}"),
            &format!("--docker-username={USER}"),
            &format!("--docker-password={PASSWORD}"),
        ],
    );
    assert_eq!(made.trim(), "secret/regcred created");
    let table = kubectl_logged(&cp, &logs, &["get", "secrets"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "DATA", "AGE"], "{table}");
    assert_eq!(rows[1][..3], ["regcred", "kubernetes.io/dockerconfigjson", "1"], "{table}");
    let yaml = kubectl_logged(&cp, &logs, &["get", "secret", "regcred", "-o", "yaml"]);
    assert!(
        yaml.contains("  .dockerconfigjson: ") && yaml.contains("type: kubernetes.io/dockerconfigjson"),
        "{yaml}"
    );
    kubectl_logged(&cp, &logs, &["create", "secret", "generic", "plain", "--from-literal=a=b"]);
    let plain = kubectl_logged(&cp, &logs, &["get", "secret", "plain", "-o", "jsonpath={.type} {.data.a}"]);
    assert_eq!(plain, "Opaque Yg==");
    assert_eq!(kubectl_logged(&cp, &logs, &["delete", "secret", "plain"]).trim(), "secret \"plain\" deleted");

    // With the secret: pulled with its credentials, running.
    create(&cp, &logs, dir, "with", &pod_yaml("with", &image("with"), &["regcred"], None));
    logs.wait_for("the pod with the secret running", POD_TIMEOUT, || {
        let p = get_json(&cp, &["pod", "with"])?;
        if p["status"]["containerStatuses"][0]["state"]["running"].is_object() {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    });
    let evs = events(&cp, "with").expect("events");
    assert!(
        evs.iter().any(|e| is(e, "Pulled", &format!("Successfully pulled image \"{}\"", image("with")))),
        "{}",
        event_text(&evs)
    );
    assert!(!evs.iter().any(|e| e["reason"] == "FailedToRetrieveImagePullSecret"), "{}", event_text(&evs));
    assert_eq!(kubectl_logged(&cp, &logs, &["logs", "with"]).trim(), "pulled");

    // Without one: the registry refuses the pull.
    create(&cp, &logs, dir, "without", &pod_yaml("without", &image("without"), &[], None));
    let evs = wait_events(&cp, &logs, "without", "a 401 for the pod without a secret", |evs| {
        evs.iter().any(|e| is(e, "Failed", "401 unauthorized"))
    });
    assert!(evs.iter().any(|e| e["message"] == "Error: ErrImagePull"), "{}", event_text(&evs));
    let p = get_json(&cp, &["pod", "without"]).expect("the pod");
    let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    assert!(
        matches!(waiting["reason"].as_str(), Some("ErrImagePull" | "ImagePullBackOff")),
        "{}",
        p["status"]
    );

    // Naming a secret that does not exist: the Warning, then the pull without credentials.
    create(&cp, &logs, dir, "missing", &pod_yaml("missing", &image("missing"), &["nope"], None));
    let evs = wait_events(&cp, &logs, "missing", "the missing secret's Warning and a 401", |evs| {
        evs.iter().any(|e| e["reason"] == "FailedToRetrieveImagePullSecret")
            && evs.iter().any(|e| is(e, "Failed", "401 unauthorized"))
    });
    let warning = evs.iter().find(|e| e["reason"] == "FailedToRetrieveImagePullSecret").expect("the Warning");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(
        warning["message"],
        "Unable to retrieve some image pull secrets (nope); attempting to pull the image may not succeed."
    );
    let order: Vec<&str> = evs.iter().filter_map(|e| e["reason"].as_str()).collect();
    let (w, pulling) = (
        order.iter().position(|r| *r == "FailedToRetrieveImagePullSecret"),
        order.iter().position(|r| *r == "Pulling"),
    );
    assert!(
        w.is_some() && pulling.is_some() && w <= pulling,
        "the secret is looked for before the pull: {order:?}"
    );
    let p = get_json(&cp, &["pod", "missing"]).expect("the pod");
    let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
    assert!(matches!(waiting.as_str(), Some("ErrImagePull" | "ImagePullBackOff")), "{}", p["status"]);

    // The node authorizer: n1 reads what its pods use and nothing else.
    for (name, literal) in [("for-n2", "b=2"), ("orphan", "c=3")] {
        kubectl_logged(
            &cp,
            &logs,
            &["create", "secret", "generic", name, &format!("--from-literal={literal}")],
        );
    }
    create(&cp, &logs, dir, "on-n2", &pod_yaml("on-n2", &image("with"), &["for-n2"], Some("n2")));
    let secrets = "/api/v1/namespaces/default/secrets";
    let got = as_node(
        &cp,
        &n1,
        &[
            &format!("GET {secrets}/regcred"),
            &format!("GET {secrets}/nope"),
            &format!("GET {secrets}/for-n2"),
            &format!("GET {secrets}/orphan"),
            &format!("GET {secrets}"),
            "GET /api/v1/secrets",
            &format!("GET {secrets}?fieldSelector=metadata.name%3Dregcred"),
            &format!("GET {secrets}?watch=true&fieldSelector=metadata.name%3Dorphan"),
            &format!("DELETE {secrets}/regcred"),
            &format!("POST {secrets}"),
        ],
    );
    let forbidden = |verb: &str, subject: &str, ns: &str, why: &str| {
        format!(
            "403 Forbidden {subject} is forbidden: User \"system:node:n1\" cannot {verb} resource \"secrets\" in API group \"\" {ns}: {why}"
        )
    };
    let ns = "in the namespace \"default\"";
    let unrelated = "no relationship found between node 'n1' and this object";
    assert_eq!(
        got,
        [
            "200 None None".to_string(),
            "404 NotFound secrets \"nope\" not found".into(),
            forbidden("get", "secrets \"for-n2\"", ns, unrelated),
            forbidden("get", "secrets \"orphan\"", ns, unrelated),
            forbidden("list", "secrets", ns, "No Object name found"),
            forbidden(
                "list",
                "secrets",
                "at the cluster scope",
                "can only read namespaced object of this type"
            ),
            "200 None None".into(),
            forbidden("watch", "secrets \"orphan\"", ns, unrelated),
            forbidden("delete", "secrets \"regcred\"", ns, "can only read resources of this type"),
            forbidden("create", "secrets \"made-by-node\"", ns, "can only read resources of this type"),
        ],
        "{}",
        logs.dump()
    );
    // n2 reads the secret its pod uses, and not n1's.
    let got = as_node(&cp, &n2, &[&format!("GET {secrets}/for-n2"), &format!("GET {secrets}/regcred")]);
    assert!(got[0].starts_with("200 "), "{got:?}");
    assert!(
        got[1].starts_with("403 Forbidden secrets \"regcred\" is forbidden: User \"system:node:n2\""),
        "{got:?}"
    );
    // kubectl as the node says the same.
    let o = kubectl_as(&cp, &n1, &["get", "secrets"]);
    assert!(!o.ok && o.stderr.contains("cannot list resource \"secrets\""), "{}", o.stderr);

    // The password went to the registry only: no log holds it.
    for log in [&logs.server, &logs.node] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains(PASSWORD), "{} shows the password", log.display());
    }
}
