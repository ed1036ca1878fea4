//! kubelet-lite against the real control plane: `sim-node` (kubelet-lite with the simulated
//! runtime) and a `control-plane` child process, judged through kubectl. Restart policies and
//! CrashLoopBackOff, graceful deletion of a running pod, and a server restart after a 60 s
//! outage in which nothing may be lost or duplicated.
//!
//! Timing checks are lower bounds that follow from the protocol (a back-off can't be shorter
//! than its delay), read from the timestamps the node reports, never from how fast this
//! machine is.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tests::cluster::*;

/// How long a pod may take to reach a state the test waits for.
const POD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the control plane stays down in the outage test.
const OUTAGE: Duration = Duration::from_secs(60);

fn restart_count(pod: &Value) -> i64 {
    first_container(pod)["restartCount"].as_i64().unwrap_or(-1)
}

/// Starts a control plane and a node named n1 and waits until the node is Ready.
fn cluster(dir: &Path, listen: &str) -> (ControlPlane, SimNode, Logs) {
    let sim_node = sim_node_binary();
    let logs = Logs { server: dir.join("server.stderr"), node: dir.join("sim-node.log") };
    let cp = ControlPlane::start_on(dir, listen, ControlPlane::append_stderr(&logs.server));
    let node = SimNode::start(&dir.join("node.kubeconfig"), "n1", &logs.node);
    assert!(sim_node.is_file());
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
    (cp, node, logs)
}

fn pod_yaml(name: &str, policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox:1.36
    command: [\"sh\", \"-c\", \"{script}\"]
"
    )
}

fn create_pod(cp: &ControlPlane, logs: &Logs, dir: &Path, name: &str, policy: &str, script: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, pod_yaml(name, policy, script)).expect("writing a pod file");
    let out = kubectl_logged(cp, logs, &["create", "-f", file.to_str().expect("UTF-8 path")]);
    assert!(out.contains(&format!("pod/{name} created")), "{out}{}", logs.dump());
}

/// Waits until `probe` accepts the pod `name`; returns the pod.
#[track_caller]
fn wait_pod(cp: &ControlPlane, logs: &Logs, name: &str, what: &str, probe: impl Fn(&Value) -> bool) -> Value {
    logs.wait_for(&format!("pod {name}: {what}"), POD_TIMEOUT, || {
        let pod = get_json(cp, &["pod", name])?;
        if probe(&pod) {
            Ok(pod)
        } else {
            Err(serde_json::to_string_pretty(&pod["status"]).unwrap_or_default())
        }
    })
}

/// Every core/v1 event, grouped by (involved object name, reason): the number of Event
/// objects and their summed counts.
fn event_groups(cp: &ControlPlane, logs: &Logs) -> BTreeMap<(String, String), (usize, i64)> {
    let list = logs.wait_for("event list", Duration::from_secs(30), || get_json(cp, &["events", "-A"]));
    let mut groups = BTreeMap::new();
    for e in list["items"].as_array().into_iter().flatten() {
        let key = (
            e["involvedObject"]["name"].as_str().unwrap_or("").to_string(),
            e["reason"].as_str().unwrap_or("").to_string(),
        );
        let g = groups.entry(key).or_insert((0, 0));
        g.0 += 1;
        g.1 += e["count"].as_i64().unwrap_or(1);
    }
    groups
}

/// A free loopback port (bound once and released), for a server that must come back on it.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    format!("127.0.0.1:{}", l.local_addr().expect("local address").port())
}

/// Each restart policy against a real server, the CrashLoopBackOff delays, and the graceful
/// deletion of a running pod.
#[test]
fn restart_policies_back_off_and_graceful_delete() {
    let _slot = slot();
    let dir = TempDir::new("policies");
    let (cp, _node, logs) = cluster(&dir.0, "127.0.0.1:0");
    let d = &dir.0;
    create_pod(&cp, &logs, d, "never-fails", "Never", "echo once; exit 3");
    create_pod(&cp, &logs, d, "onfailure-ok", "OnFailure", "echo fine; exit 0");
    create_pod(&cp, &logs, d, "onfailure-retries", "OnFailure", "echo try; exit 1");
    create_pod(&cp, &logs, d, "always-crashes", "Always", "echo run; sleep 2; exit 1");
    create_pod(&cp, &logs, d, "sleeper", "Never", "echo sleeping; sleep 300");

    let failed = wait_pod(&cp, &logs, "never-fails", "Failed", |p| p["status"]["phase"] == "Failed");
    let term = &first_container(&failed)["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{failed}");
    assert_eq!(term["reason"], "Error", "{failed}");
    assert_eq!(restart_count(&failed), 0, "{failed}");
    let ok = wait_pod(&cp, &logs, "onfailure-ok", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(restart_count(&ok), 0, "{ok}");
    assert_eq!(first_container(&ok)["state"]["terminated"]["reason"], "Completed", "{ok}");

    // Always: restart 1 is immediate, then 10 s, then 20 s of CrashLoopBackOff. Each run's
    // start comes from the node's own timestamps: the running state while it runs, the
    // last termination while it waits.
    let mut starts: BTreeMap<i64, i64> = BTreeMap::new();
    let mut saw_crash_loop_in_kubectl = false;
    logs.wait_for("always-crashes restarted three times", POD_TIMEOUT, || {
        let pod = get_json(&cp, &["pod", "always-crashes"])?;
        let c = first_container(&pod);
        let n = restart_count(&pod);
        if let Some(t) = c["state"]["running"]["startedAt"].as_str().and_then(unix_seconds) {
            starts.insert(n, t);
        }
        if let Some(t) = c["lastState"]["terminated"]["startedAt"].as_str().and_then(unix_seconds) {
            starts.entry(n - 1).or_insert(t);
        }
        if c["state"]["waiting"]["reason"] == "CrashLoopBackOff" && !saw_crash_loop_in_kubectl {
            let table = kubectl(&cp, &["get", "pod", "always-crashes"]);
            saw_crash_loop_in_kubectl = table.stdout.contains("CrashLoopBackOff");
        }
        if n >= 3 && (0..=3).all(|k| starts.contains_key(&k)) {
            Ok(())
        } else {
            Err(format!("starts {starts:?}\n{}", pod["status"]))
        }
    });
    // The runs take 2 s each; whole seconds lose at most one.
    let gap = |k: i64| starts[&k] - starts[&(k - 1)];
    assert!(gap(2) >= 2 + 10 - 1, "second restart after {} s: {starts:?}", gap(2));
    assert!(gap(3) >= 2 + 20 - 1, "third restart after {} s: {starts:?}", gap(3));
    assert!(saw_crash_loop_in_kubectl, "kubectl get pod never showed CrashLoopBackOff{}", logs.dump());
    let retried = get_json(&cp, &["pod", "onfailure-retries"]).expect("onfailure-retries");
    assert!(restart_count(&retried) >= 2, "{retried}");
    assert_eq!(retried["status"]["phase"], "Running", "{retried}");
    let groups = event_groups(&cp, &logs);
    let backoffs = groups.get(&("always-crashes".into(), "BackOff".into()));
    assert!(backoffs.is_some_and(|g| g.1 >= 2), "BackOff events: {backoffs:?}\n{groups:?}");

    // A running pod: `kubectl delete` returns once the node has stopped it and made the final delete.
    wait_pod(&cp, &logs, "sleeper", "Running", |p| p["status"]["phase"] == "Running");
    let out = kubectl_logged(&cp, &logs, &["delete", "pod", "sleeper", "--timeout=60s"]);
    assert!(out.contains("pod \"sleeper\" deleted"), "{out}{}", logs.dump());
    let gone = kubectl(&cp, &["get", "pod", "sleeper"]);
    assert!(!gone.ok && gone.stderr.contains("not found"), "{}{}", gone.stderr, logs.dump());
    let groups = event_groups(&cp, &logs);
    assert!(groups.contains_key(&("sleeper".into(), "Killing".into())), "no Killing event: {groups:?}");
}

/// The control plane goes away for 60 s while one pod runs and another finishes, then comes
/// back on the same directory and port: the node carries on, reports what happened meanwhile,
/// and nothing is lost or sent twice.
#[test]
fn server_restart_after_an_outage_loses_and_duplicates_nothing() {
    let _slot = slot();
    let dir = TempDir::new("outage");
    let listen = free_addr();
    let (cp, _node, logs) = cluster(&dir.0, &listen);
    let d = &dir.0;
    create_pod(&cp, &logs, d, "long", "Never", "echo long runner; sleep 600");
    create_pod(&cp, &logs, d, "finisher", "Never", "echo finishing; sleep 25; echo finished; exit 0");
    let long = wait_pod(&cp, &logs, "long", "Running", |p| p["status"]["phase"] == "Running");
    wait_pod(&cp, &logs, "finisher", "Running", |p| p["status"]["phase"] == "Running");
    let node_uid = get_json(&cp, &["node", "n1"]).expect("node n1")["metadata"]["uid"].clone();
    let started = first_container(&long)["state"]["running"]["startedAt"].clone();
    let container_id = first_container(&long)["containerID"].clone();
    // Let the start-up events reach the server before it goes.
    logs.wait_for("Started events", Duration::from_secs(30), || {
        let g = event_groups(&cp, &logs);
        let have = |p: &str| g.contains_key(&(p.to_string(), "Started".to_string()));
        if have("long") && have("finisher") {
            Ok(())
        } else {
            Err(format!("{g:?}"))
        }
    });

    drop(cp);
    std::thread::sleep(OUTAGE);
    let back_at = unix_seconds(&now_rfc3339()).expect("the time");
    let cp = ControlPlane::start_on(d, &listen, ControlPlane::append_stderr(&logs.server));

    // The lease is renewed after the restart, by the same node object.
    logs.wait_for("lease renewed after the restart", POD_TIMEOUT, || {
        let lease = get_json(&cp, &["lease", "n1", "-n", "kube-node-lease"])?;
        let renew = lease["spec"]["renewTime"].as_str().and_then(unix_seconds);
        if renew.is_some_and(|t| t >= back_at) {
            Ok(())
        } else {
            Err(lease.to_string())
        }
    });
    let nodes = kubectl_logged(&cp, &logs, &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.trim(), "node/n1", "{}", logs.dump());
    let node = get_json(&cp, &["node", "n1"]).expect("node n1");
    assert_eq!(node["metadata"]["uid"], node_uid, "the node was registered anew{}", logs.dump());

    // What finished during the outage is reported; what kept running was not restarted.
    let fin = wait_pod(&cp, &logs, "finisher", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(first_container(&fin)["state"]["terminated"]["exitCode"], 0, "{fin}");
    let long = get_json(&cp, &["pod", "long"]).expect("pod long");
    assert_eq!(long["status"]["phase"], "Running", "{long}");
    assert_eq!(restart_count(&long), 0, "{long}");
    assert_eq!(first_container(&long)["state"]["running"]["startedAt"], started, "{long}");
    assert_eq!(first_container(&long)["containerID"], container_id, "{long}");
    let out = kubectl_logged(&cp, &logs, &["logs", "finisher"]);
    assert!(out.contains("finishing") && out.contains("finished"), "{out:?}{}", logs.dump());

    // The node's watch broke with the server; it relists and runs a pod created now.
    create_pod(&cp, &logs, d, "after", "Never", "echo after the outage; exit 0");
    wait_pod(&cp, &logs, "after", "Succeeded", |p| p["status"]["phase"] == "Succeeded");

    // No event was posted twice: one object, count 1, per (object, reason).
    let groups = event_groups(&cp, &logs);
    for pod in ["long", "finisher", "after"] {
        for reason in ["Scheduled", "Pulled", "Created", "Started"] {
            let g = groups.get(&(pod.to_string(), reason.to_string()));
            assert_eq!(g, Some(&(1, 1)), "{pod} {reason}: {g:?}\n{groups:?}{}", logs.dump());
        }
    }
    for ((name, reason), (objects, count)) in &groups {
        assert!(
            *objects == 1 && *count == 1,
            "{name} {reason}: {objects} objects, count {count}\n{groups:?}"
        );
    }
    let node = get_json(&cp, &["node", "n1"]).expect("node n1");
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or_default();
    assert_eq!(ready["status"], "True", "{node}{}", logs.dump());
}

#[test]
fn civil_time_conversion() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_seconds("2024-12-11T10:00:00Z"), Some(1_733_911_200));
    assert_eq!(unix_seconds("2024-12-11T10:00:10.123456Z"), Some(1_733_911_210));
    assert_eq!(unix_seconds("garbage"), None);
}

/// What kubectl and the Python client show of a node and its pods: `describe node`,
/// `get nodes -o wide`, `logs -f` while the container prints, events with a field selector,
/// `describe pod`, `get pods -w` through the phases, and a Python watch of nodes.
#[test]
fn kubectl_shows_the_node_and_its_pods_as_on_a_real_cluster() {
    let _slot = slot();
    let dir = TempDir::new("kubectl");
    let (cp, _node, logs) = cluster(&dir.0, "127.0.0.1:0");

    let wide = kubectl_logged(&cp, &logs, &["get", "nodes", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    for col in [
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        "INTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ] {
        assert!(header.contains(col), "{col} missing:\n{wide}");
    }
    let row = wide.lines().find(|l| l.starts_with("n1 ")).unwrap_or("");
    for cell in ["Ready", "v1.32.0", "127.0.0.1", "lite://0.1.0"] {
        assert!(row.contains(cell), "{cell} missing:\n{wide}");
    }
    let yaml = kubectl_logged(&cp, &logs, &["get", "node", "n1", "-o", "yaml"]);
    assert!(
        yaml.contains("kubeletEndpoint:") && yaml.contains("Port:") && yaml.contains("machineID:"),
        "{yaml}"
    );

    // `get pods -w` from before the pod exists until it has completed.
    let cfg = cp.kubeconfig();
    let cache = cp.dir.join("kube-cache");
    let home = cp.dir.clone();
    let watcher = std::thread::spawn(move || {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(cfg).arg("--cache-dir").arg(cache).env("HOME", home);
        cmd.args(["get", "pods", "-w", "--request-timeout=25s"]);
        run(cmd)
    });
    std::thread::sleep(Duration::from_secs(2));
    create_pod(
        &cp,
        &logs,
        &dir.0,
        "talker",
        "Never",
        "echo line one; sleep 2; echo line two; sleep 2; echo line three",
    );
    // `logs -f` follows the container while it prints and ends when it exits.
    let followed = logs.wait_for("kubectl logs -f", POD_TIMEOUT, || {
        let o = kubectl(&cp, &["logs", "-f", "talker"]);
        if o.ok {
            Ok(o.stdout)
        } else {
            Err(o.stderr)
        }
    });
    assert_eq!(followed, "line one\nline two\nline three\n", "{}", logs.dump());
    let done = wait_pod(&cp, &logs, "talker", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(first_container(&done)["state"]["terminated"]["reason"], "Completed");
    let watched = watcher.join().expect("the watch thread");
    let states: Vec<&str> = watched
        .stdout
        .lines()
        .filter(|l| l.starts_with("talker "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for want in ["Pending", "Running", "Completed"] {
        assert!(states.contains(&want), "{want} not seen by `get pods -w`: {states:?}\n{}", watched.stdout);
    }

    let events =
        kubectl_logged(&cp, &logs, &["get", "events", "--field-selector", "involvedObject.name=talker"]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            events.lines().any(|l| l.split_whitespace().any(|w| w == reason)),
            "{reason} missing:\n{events}"
        );
    }
    assert!(events.lines().all(|l| l.starts_with("LAST SEEN") || l.contains("pod/talker")), "{events}");
    let described = kubectl_logged(&cp, &logs, &["describe", "pod", "talker"]);
    for want in ["Node:", "n1/127.0.0.1", "Status:", "Succeeded", "Exit Code:", "Events:", "Started"] {
        assert!(described.contains(want), "{want} missing:\n{described}");
    }

    let node = kubectl_logged(&cp, &logs, &["describe", "node", "n1"]);
    for want in [
        "Conditions:",
        "KubeletReady",
        "Addresses:",
        "InternalIP:",
        "Capacity:",
        "Allocatable:",
        "System Info:",
        "Kubelet Version:",
        "Lease:",
        "RenewTime:",
        "Events:",
        "NodeReady",
    ] {
        assert!(node.contains(want), "{want} missing from describe node:\n{node}");
    }

    let program = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
w = watch.Watch()
for ev in w.stream(v1.list_node, timeout_seconds=2):
    n = ev["object"]
    assert isinstance(n, client.V1Node), type(n)
    ready = [c.status for c in n.status.conditions if c.type == "Ready"]
    print("node", ev["type"], n.metadata.name, ready, n.status.node_info.kubelet_version)
print("done")
"#;
    let o = python(&cp, program);
    assert!(o.ok, "python failed:\n{}\n{}{}", o.stdout, o.stderr, logs.dump());
    assert!(o.stdout.contains("node ADDED n1 ['True'] v1.32.0"), "{}", o.stdout);

    // The node's containerLogs endpoint is HTTPS and serves only the API server: a client
    // without a certificate from the cluster CA is turned away in the handshake.
    let port = kubectl_logged(
        &cp,
        &logs,
        &["get", "node", "n1", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"],
    );
    let program = format!(
        r#"
import socket, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port}), timeout=20))
    c.sendall(b"GET /containerLogs/default/talker/main HTTP/1.1\r\nHost: x\r\n\r\n")
    print("answered", c.recv(100))
except (ssl.SSLError, ConnectionError, OSError) as e:
    print("refused", type(e).__name__)
"#
    );
    let o = python(&cp, &program);
    assert!(o.stdout.starts_with("refused"), "{}{}", o.stdout, o.stderr);
}
