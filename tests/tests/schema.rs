//! Every object the control plane returns, checked against the official Kubernetes OpenAPI
//! documents (the schema-check crate): a Python program drives a real `control-plane` process
//! through discovery, every resource and verb, graceful deletion, errors of each kind, Tables
//! and watch streams, and prints each response as a JSON line; this test checks every body
//! (and every object in every watch event) by its kind. Without the documents it says so and
//! checks only that the responses parse.

use schema_check::Schemas;
use serde_json::Value;
use std::collections::BTreeSet;
use tests::cluster::*;

/// The request helper: prints every response as a JSON line.
const PRELUDE: &str = r#"
import http.client, json, ssl, sys, time, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
token = cfg["users"][0]["user"]["token"]
host, port = sys.argv[2].rsplit("//", 1)[1].split(":")
ctx = ssl.create_default_context(cafile=sys.argv[3])

def req(method, path, body=None, ctype="application/json", accept="application/json", auth=True):
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    h = {"Content-Type": ctype, "Accept": accept}
    if auth:
        h["Authorization"] = "Bearer " + token
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    text = r.read().decode()
    rec = {"req": method + " " + path, "status": r.status}
    if "watch=" in path:
        rec["lines"] = [json.loads(l) for l in text.splitlines() if l.strip()]
    else:
        rec["body"] = json.loads(text)
    print(json.dumps(rec), flush=True)
    return rec
"#;

/// The scenario.
const DRIVER: &str = r#"
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
micro = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
req("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
for p in ["/version", "/api", "/apis", "/api/v1", "/apis/coordination.k8s.io/v1", "/apis/events.k8s.io/v1",
          "/apis/authentication.k8s.io/v1",
          "/api/v1/namespaces", "/api/v1/namespaces/default"]:
    req("GET", p)
start = req("GET", "/api/v1/namespaces/default/pods")["body"]["metadata"]["resourceVersion"]
req("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}})
res = {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}
cond = lambda t, s, r: {"type": t, "status": s, "reason": r, "message": r, "lastHeartbeatTime": now, "lastTransitionTime": now}
node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
        "status": {"capacity": res, "allocatable": res,
                   "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory"), cond("Ready", "True", "KubeletReady")],
                   "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "n1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
                   "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1.0", "osImage": "test",
                                "containerRuntimeVersion": "lite://0.1.0", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                                "operatingSystem": "linux", "architecture": "amd64"}}}
req("POST", "/api/v1/nodes", node)
req("POST", "/api/v1/nodes", node)
req("GET", "/api/v1/nodes")
req("GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1&limit=500")
req("PATCH", "/api/v1/nodes/n1/status", {"status": {"$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
    "conditions": [{"type": "Ready", "lastHeartbeatTime": now}]}}, ctype="application/strategic-merge-patch+json")
lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1", "namespace": "kube-node-lease"},
         "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": micro}}
l = req("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)["body"]
req("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", l)
req("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", l)
req("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "100m"}}}]}}
p = req("POST", "/api/v1/namespaces/default/pods", pod)["body"]
for _ in range(100):
    p = req("GET", "/api/v1/namespaces/default/pods/web")["body"]
    if p["spec"].get("nodeName"):
        break
    time.sleep(0.1)
uid = p["metadata"]["uid"]
status = {"metadata": {"uid": uid}, "status": {"phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
    "podIP": "10.88.0.2", "podIPs": [{"ip": "10.88.0.2"}], "startTime": now,
    "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}],
    "containerStatuses": [{"name": "app", "image": "busybox:1.36", "imageID": "", "containerID": "lite://1", "ready": True,
                           "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}, "lastState": {}}]}}
req("PATCH", "/api/v1/namespaces/default/pods/web/status", status, ctype="application/strategic-merge-patch+json")
req("PATCH", "/api/v1/namespaces/default/pods/web", {"metadata": {"labels": {"tier": "front"}}}, ctype="application/merge-patch+json")
req("PATCH", "/api/v1/namespaces/default/pods/web", [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}],
    ctype="application/json-patch+json")
req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1%2Cstatus.phase%21%3DSucceeded&limit=500")
req("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
req("GET", "/api/v1/namespaces/default/pods", accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "default"},
         "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": uid, "apiVersion": "v1"},
         "reason": "Started", "message": "Started container app", "type": "Normal", "count": 1,
         "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet", "host": "n1"}}
req("POST", "/api/v1/namespaces/default/events", event)
req("PATCH", "/api/v1/namespaces/default/events/web.1", {"count": 2, "lastTimestamp": now}, ctype="application/strategic-merge-patch+json")
req("GET", "/api/v1/events?fieldSelector=involvedObject.name%3Dweb")
req("GET", "/apis/events.k8s.io/v1/namespaces/default/events")
# Secrets: stringData merged into data, a dockerconfigjson one, a list and a Table.
req("POST", "/api/v1/namespaces/default/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
    "data": {"a": "YQ=="}, "stringData": {"b": "bee"}})
req("POST", "/api/v1/namespaces/default/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
    "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": '{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}'}})
req("GET", "/api/v1/namespaces/default/secrets/regcred")
req("GET", "/api/v1/secrets")
req("GET", "/api/v1/namespaces/default/secrets", accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
req("POST", "/api/v1/namespaces/default/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
    "type": "kubernetes.io/dockerconfigjson", "data": {"no way": ""}})
req("DELETE", "/api/v1/namespaces/default/secrets/plain")
# Graceful deletion: marked, a wrong uid refused, then the node's final delete.
req("DELETE", "/api/v1/namespaces/default/pods/web", {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
req("DELETE", "/api/v1/namespaces/default/pods/web", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": "wrong"}})
req("DELETE", "/api/v1/namespaces/default/pods/web", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
req("DELETE", "/api/v1/namespaces/extra")
# Errors of each kind.
req("GET", "/api/v1/namespaces/default/pods/missing")
req("GET", "/api/v1/namespaces/default/widgets")
req("GET", "/api/v1/pods", auth=False)
req("POST", "/api/v1/namespaces/default/pods", "{not json")
req("POST", "/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": []}})
req("POST", "/api/v1/namespaces/default/pods?fieldValidation=Strict", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"bogus": 1, "containers": [{"name": "c", "image": "i"}]}})
req("POST", "/api/v1/namespaces/default/pods", b"x" * (3 * 1024 * 1024 + 1))
req("GET", "/api/v1/pods?labelSelector=%3D%3D%3D")
# Watches: the pod's whole life from before it existed, and one from too long ago.
req("GET", "/api/v1/namespaces/default/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=" + start)
req("GET", "/api/v1/nodes?watch=1&timeoutSeconds=1")
"#;

/// After a restart the watch history is empty: a watch from before it is told 410 Expired.
const AFTER_RESTART: &str = r#"
req("GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1&resourceVersion=1")
req("GET", "/api/v1/namespaces/default/pods")
"#;

/// What was checked.
#[derive(Default)]
struct Tally {
    checked: BTreeSet<String>,
    unchecked: BTreeSet<String>,
    errors: Vec<String>,
}

impl Tally {
    fn check(&mut self, schemas: Option<&Schemas>, what: &str, v: &Value) {
        let api_version = v["apiVersion"].as_str().unwrap_or("");
        let kind = v["kind"].as_str().unwrap_or("");
        let Some(s) = schemas else { return };
        let def = if what.ends_with(" /version") {
            Some("io.k8s.apimachinery.pkg.version.Info".to_string())
        } else {
            s.definition_for(api_version, kind)
        };
        match def {
            Some(def) => {
                for e in s.validate(&def, v) {
                    self.errors.push(format!("{what}: {e}\n  {v}"));
                }
                self.checked.insert(def);
            }
            None if kind == "Table" => {
                // Not in the official documents; its rows' metadata is.
                for row in v["rows"].as_array().into_iter().flatten() {
                    let meta = &row["object"]["metadata"];
                    for e in s.validate("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", meta) {
                        self.errors.push(format!("{what}: Table row: {e}"));
                    }
                }
                self.unchecked.insert(format!("{api_version} {kind}"));
            }
            None => {
                self.errors.push(format!("{what}: no official definition for {api_version:?} {kind:?}: {v}"))
            }
        }
    }
}

#[test]
fn every_object_the_server_returns_follows_the_official_schema() {
    let _slot = slot();
    let dir = TempDir::new("schema");
    let mut stdout = String::new();
    for part in [DRIVER, AFTER_RESTART] {
        let cp = ControlPlane::start(&dir.0);
        let o = python(&cp, &format!("{PRELUDE}{part}"));
        assert!(o.ok, "the driver failed:\n{}\n{}", o.stdout, o.stderr);
        stdout.push_str(&o.stdout);
    }
    let schemas = Schemas::load();
    let mut tally = Tally::default();
    let mut statuses = BTreeSet::new();
    let mut watch_types = BTreeSet::new();
    for line in stdout.lines() {
        let rec: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let what = format!("{} -> {}", rec["req"].as_str().unwrap_or("?"), rec["status"]);
        statuses.insert(rec["status"].as_u64().unwrap_or(0));
        if let Some(lines) = rec["lines"].as_array() {
            for ev in lines {
                watch_types.insert(ev["type"].as_str().unwrap_or("?").to_string());
                if let Some(s) = &schemas {
                    for e in s.validate("io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", ev) {
                        tally.errors.push(format!("{what}: watch event: {e}"));
                    }
                }
                tally.check(schemas.as_ref(), &format!("{what} {}", ev["type"]), &ev["object"]);
            }
        } else {
            let what = if rec["req"] == "GET /version" { format!("{what} /version") } else { what };
            tally.check(schemas.as_ref(), &what, &rec["body"]);
        }
    }
    // The scenario reached what it meant to: successes and every kind of error, and a watch
    // with every event type the server sends.
    for code in [200, 201, 400, 401, 404, 409, 413, 422] {
        assert!(statuses.contains(&code), "no {code} response in the scenario: {statuses:?}\n{stdout}");
    }
    for t in ["ADDED", "MODIFIED", "DELETED", "ERROR"] {
        assert!(watch_types.contains(t), "no {t} watch event: {watch_types:?}");
    }
    if schemas.is_none() {
        return;
    }
    assert!(tally.errors.is_empty(), "{} violations:\n{}", tally.errors.len(), tally.errors.join("\n"));
    for kind in [
        "core.v1.Pod",
        "core.v1.PodList",
        "core.v1.Node",
        "core.v1.NodeList",
        "core.v1.Namespace",
        "core.v1.NamespaceList",
        "core.v1.Event",
        "core.v1.EventList",
        "coordination.v1.Lease",
        "coordination.v1.LeaseList",
        "core.v1.Secret",
        "core.v1.SecretList",
        "events.v1.EventList",
        "meta.v1.Status",
        "meta.v1.APIResourceList",
        "meta.v1.APIVersions",
        "meta.v1.APIGroupList",
        "version.Info",
        "authentication.v1.SelfSubjectReview",
    ] {
        assert!(
            tally.checked.iter().any(|c| c.ends_with(kind)),
            "no {kind} was checked: {:?}",
            tally.checked
        );
    }
    assert_eq!(tally.unchecked.iter().collect::<Vec<_>>(), ["meta.k8s.io/v1 Table"], "{:?}", tally.unchecked);
}
