//! The node agent against an in-memory fake API server, with a fake clock and the
//! simulated runtime. Every object kubelet-lite sends is checked against the official
//! Kubernetes OpenAPI schema (the schema-check crate) when the documents are present (the schema part is
//! skipped, with a note on stderr, when it is not).

use schema_check as schema;

use kubelet_lite::agent::{Agent, NodeConfig, Op};
use kubelet_lite::http::{LineDecoder, Method, Request};
use kubelet_lite::runtime::RegistryAuth;
use kubelet_lite::sim::SimRuntime;
use kubelet_lite::time::Time;
use kubelet_lite::types::NodeSystemInfo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};

struct FakeApi {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    leases: BTreeMap<String, Value>,
    pods: BTreeMap<String, Value>,
    /// Secrets of the namespace `default`, by name.
    secrets: BTreeMap<String, Value>,
    events: Vec<Value>,
    log: Vec<(Method, String, Value)>,
    /// Forced replies for the next request whose path contains the key: (status, body).
    inject: VecDeque<(String, Method, u16, Value)>,
    watch_lines: VecDeque<String>,
    watch_open: bool,
    schemas: Option<schema::Schemas>,
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code})
}

impl FakeApi {
    fn new() -> Self {
        let schemas = schema::Schemas::load();
        FakeApi {
            rv: 100,
            nodes: BTreeMap::new(),
            leases: BTreeMap::new(),
            pods: BTreeMap::new(),
            secrets: BTreeMap::new(),
            events: Vec::new(),
            log: Vec::new(),
            inject: VecDeque::new(),
            watch_lines: VecDeque::new(),
            watch_open: false,
            schemas,
        }
    }

    fn check(&self, schema: &str, v: &Value) {
        if let Some(s) = &self.schemas {
            let errs = s.validate(schema, v);
            assert!(errs.is_empty(), "{schema} invalid: {errs:#?}\n{v:#}");
        }
    }

    fn bump(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn handle(&mut self, req: &Request) -> (u16, Value) {
        let body: Value = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).expect("client sent JSON")
        };
        self.log.push((req.method, req.path.clone(), body.clone()));
        if let Some(pos) =
            self.inject.iter().position(|(p, m, _, _)| req.path.contains(p.as_str()) && *m == req.method)
        {
            let (_, _, code, b) = self.inject.remove(pos).unwrap();
            return (code, b);
        }
        let path = req.path.split('?').next().unwrap().to_string();
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method, seg.as_slice()) {
            (Method::Post, ["api", "v1", "nodes"]) => {
                self.check("io.k8s.api.core.v1.Node", &body);
                let name = body["metadata"]["name"].as_str().unwrap().to_string();
                if self.nodes.contains_key(&name) {
                    return (409, status_body(409, "AlreadyExists"));
                }
                let mut n = body.clone();
                n["metadata"]["uid"] = json!(format!("node-uid-{name}"));
                n["metadata"]["resourceVersion"] = json!(self.bump());
                self.nodes.insert(name, n.clone());
                (201, n)
            }
            (Method::Get, ["api", "v1", "nodes", name]) => match self.nodes.get(*name) {
                Some(n) => (200, n.clone()),
                None => (404, status_body(404, "NotFound")),
            },
            (Method::Patch, ["api", "v1", "nodes", name, "status"]) => {
                assert_eq!(req.content_type, Some("application/strategic-merge-patch+json"));
                let stripped = schema::strip_directives(&body["status"]);
                self.check("io.k8s.api.core.v1.NodeStatus", &stripped);
                match self.nodes.get_mut(*name) {
                    Some(n) => {
                        n["status"] = stripped;
                        (200, n.clone())
                    }
                    None => (404, status_body(404, "NotFound")),
                }
            }
            (
                Method::Get,
                ["apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases", name],
            ) => match self.leases.get(*name) {
                Some(l) => (200, l.clone()),
                None => (404, status_body(404, "NotFound")),
            },
            (
                Method::Post,
                ["apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases"],
            ) => {
                self.check("io.k8s.api.coordination.v1.Lease", &body);
                let mut l = body.clone();
                l["metadata"]["resourceVersion"] = json!(self.bump());
                self.leases.insert(body["metadata"]["name"].as_str().unwrap().into(), l.clone());
                (201, l)
            }
            (
                Method::Put,
                ["apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases", name],
            ) => {
                self.check("io.k8s.api.coordination.v1.Lease", &body);
                let cur = self.leases.get(*name).cloned();
                match cur {
                    Some(c) if c["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"] => {
                        let mut l = body.clone();
                        l["metadata"]["resourceVersion"] = json!(self.bump());
                        self.leases.insert(name.to_string(), l.clone());
                        (200, l)
                    }
                    Some(_) => (409, status_body(409, "Conflict")),
                    None => (404, status_body(404, "NotFound")),
                }
            }
            (Method::Get, ["api", "v1", "pods"]) => {
                assert!(req.path.contains("fieldSelector=spec.nodeName%3Dn1"), "{}", req.path);
                let items: Vec<Value> = self.pods.values().cloned().collect();
                (
                    200,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                )
            }
            (Method::Patch, ["api", "v1", "namespaces", _, "pods", name, "status"]) => {
                assert_eq!(req.content_type, Some("application/strategic-merge-patch+json"));
                self.check("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", &body["metadata"]);
                self.check("io.k8s.api.core.v1.PodStatus", &body["status"]);
                let rv = self.bump();
                match self.pods.get_mut(*name) {
                    Some(p) if p["metadata"]["uid"] == body["metadata"]["uid"] => {
                        p["status"] = body["status"].clone();
                        p["metadata"]["resourceVersion"] = json!(rv);
                        (200, p.clone())
                    }
                    Some(_) => (422, status_body(422, "Invalid")),
                    None => (404, status_body(404, "NotFound")),
                }
            }
            (Method::Delete, ["api", "v1", "namespaces", _, "pods", name]) => {
                self.check("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", &body);
                match self.pods.get(*name).cloned() {
                    Some(p) if body["preconditions"]["uid"] == p["metadata"]["uid"] => {
                        self.pods.remove(*name);
                        self.bump();
                        (200, p)
                    }
                    Some(_) => (409, status_body(409, "Conflict")),
                    None => (404, status_body(404, "NotFound")),
                }
            }
            (Method::Get, ["api", "v1", "namespaces", "default", "secrets", name]) => {
                assert!(body.is_null(), "a GET has no body");
                match self.secrets.get(*name) {
                    Some(s) => (200, s.clone()),
                    None => (404, status_body(404, "NotFound")),
                }
            }
            (Method::Post, ["api", "v1", "namespaces", _, "events"]) => {
                self.check("io.k8s.api.core.v1.Event", &body);
                if self.events.iter().any(|e| e["metadata"]["name"] == body["metadata"]["name"]) {
                    return (409, status_body(409, "AlreadyExists"));
                }
                self.events.push(body.clone());
                (201, body)
            }
            (Method::Patch, ["api", "v1", "namespaces", _, "events", name]) => {
                assert_eq!(req.content_type, Some("application/strategic-merge-patch+json"));
                self.check("io.k8s.api.core.v1.Event", &json!({"metadata": {}, "involvedObject": {}, "count": body["count"], "lastTimestamp": body["lastTimestamp"], "message": body["message"]}));
                match self.events.iter_mut().find(|e| e["metadata"]["name"] == *name) {
                    Some(e) => {
                        for k in ["count", "lastTimestamp", "message"] {
                            e[k] = body[k].clone();
                        }
                        (200, e.clone())
                    }
                    None => (404, status_body(404, "NotFound")),
                }
            }
            _ => panic!("unexpected request {:?} {}", req.method, req.path),
        }
    }
}

fn cfg() -> NodeConfig {
    let res = |cpu: &str, mem: &str| {
        [("cpu", cpu), ("memory", mem), ("pods", "110"), ("ephemeral-storage", "20Gi")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    NodeConfig {
        name: "n1".into(),
        internal_ip: "10.0.0.2".into(),
        kubelet_port: 10250,
        capacity: res("2", "4Gi"),
        allocatable: res("2", "4Gi"),
        node_info: NodeSystemInfo {
            machine_id: "m".into(),
            system_uuid: "s".into(),
            boot_id: "b".into(),
            kernel_version: "6.1.0".into(),
            os_image: "kubelet-lite OS".into(),
            container_runtime_version: "lite://0.1.0".into(),
            kubelet_version: "v1.32.0".into(),
            kube_proxy_version: "v1.32.0".into(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
        },
        pod_net: "10.88.0".into(),
    }
}

struct Harness {
    agent: Agent,
    api: FakeApi,
    rt: SimRuntime,
    now: Time,
}

impl Harness {
    fn new() -> Self {
        let now = Time::from_secs(1_733_911_200);
        Harness { agent: Agent::new(cfg(), now), api: FakeApi::new(), rt: SimRuntime::new(), now }
    }

    /// One tick at the current time, answering every request; repeats while requests flow.
    fn step(&mut self) {
        for _ in 0..10 {
            let out = self.agent.tick(self.now, &mut self.rt);
            let idle = out.is_empty() && self.api.watch_lines.is_empty();
            for o in out {
                if o.op == Op::WatchPods {
                    assert!(
                        o.request.path.contains("watch=true")
                            && o.request.path.contains("allowWatchBookmarks=true")
                    );
                    self.api.log.push((o.request.method, o.request.path.clone(), Value::Null));
                    self.api.watch_open = true;
                    continue;
                }
                let (code, body) = self.api.handle(&o.request);
                let bytes = serde_json::to_vec(&body).unwrap();
                self.agent.on_response(o.op, Ok((code, &bytes)), self.now, &mut self.rt);
            }
            if self.api.watch_open {
                // Deliver queued watch events split at awkward points, as chunks would.
                let text: String = self.api.watch_lines.drain(..).map(|l| l + "\n").collect();
                let mut dec = LineDecoder::new(1 << 20);
                for piece in text.as_bytes().chunks(7) {
                    for line in dec.push(piece).unwrap() {
                        self.agent.on_watch_line(&line, self.now, &mut self.rt);
                    }
                }
            }
            if idle {
                break;
            }
        }
    }

    fn advance(&mut self, secs: u64) {
        for _ in 0..secs {
            self.now = self.now.plus_secs(1);
            self.step();
        }
    }

    fn requests(&self, m: Method, path_part: &str) -> Vec<(String, Value)> {
        self.api
            .log
            .iter()
            .filter(|(mm, p, _)| *mm == m && p.contains(path_part))
            .map(|(_, p, b)| (p.clone(), b.clone()))
            .collect()
    }

    /// The reasons of the events about the object named `name`, in the order they arrived.
    fn event_reasons(&self, name: &str) -> Vec<String> {
        self.api
            .events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect()
    }

    fn add_pod(&mut self, name: &str, policy: &str, script: &str) -> Value {
        let p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "5"},
            "spec": {"nodeName": "n1", "restartPolicy": policy,
                     "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", script]}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}
        });
        self.api.pods.insert(name.into(), p.clone());
        p
    }
}

#[test]
fn registers_keeps_lease_and_reports_status() {
    let mut h = Harness::new();
    h.step();
    assert!(h.agent.registered());
    let posts = h.requests(Method::Post, "/api/v1/nodes");
    assert_eq!(posts.len(), 1);
    let node = &posts[0].1;
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
    assert_eq!(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    assert_eq!(node["status"]["nodeInfo"].as_object().unwrap().len(), 10);
    // Lease: GET 404 → POST with owner reference and MicroTime renewTime.
    let created = h.requests(Method::Post, "/leases");
    assert_eq!(created.len(), 1);
    let lease = &created[0].1;
    assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "node-uid-n1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["spec"]["renewTime"].as_str().unwrap().len(), "2024-12-11T10:00:00.000000Z".len());
    // Status patch with the SMP directives.
    let patches = h.requests(Method::Patch, "/api/v1/nodes/n1/status");
    assert_eq!(patches.len(), 1);
    let st = &patches[0].1["status"];
    assert_eq!(st["$setElementOrder/conditions"].as_array().unwrap().len(), 4);
    assert_eq!(st["addresses"].as_array().unwrap().last().unwrap(), &json!({"$patch": "replace"}));
    assert!(h.api.events.iter().any(|e| e["reason"] == "NodeReady" && e["involvedObject"]["uid"] == "n1"));
    // 30 s later: three renewals (PUT every 10 s), no extra status patch (unchanged).
    h.advance(30);
    assert_eq!(h.requests(Method::Put, "/leases/n1").len(), 3);
    assert_eq!(h.requests(Method::Patch, "/api/v1/nodes/n1/status").len(), 1);
    // Every update reads the server's copy first (from its cache: resourceVersion=0).
    assert!(h.requests(Method::Get, "/api/v1/nodes/n1?resourceVersion=0").len() >= 3);
    // After 5 minutes the unchanged status is reported again.
    h.advance(300);
    assert_eq!(h.requests(Method::Patch, "/api/v1/nodes/n1/status").len(), 2);
}

#[test]
fn a_status_changed_by_the_server_is_put_right_at_the_next_update() {
    let mut h = Harness::new();
    h.step();
    h.advance(10);
    assert_eq!(h.requests(Method::Patch, "/api/v1/nodes/n1/status").len(), 1);
    // The node lifecycle controller marks the node Unknown behind the agent's back.
    for c in h.api.nodes.get_mut("n1").unwrap()["status"]["conditions"].as_array_mut().unwrap() {
        c["status"] = json!("Unknown");
        c["reason"] = json!("NodeStatusUnknown");
    }
    h.advance(10);
    let patches = h.requests(Method::Patch, "/api/v1/nodes/n1/status");
    assert_eq!(patches.len(), 2, "the Unknown node was not put right");
    let ready = &h.api.nodes["n1"]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True");
    // Back in agreement: no further patch.
    h.advance(20);
    assert_eq!(h.requests(Method::Patch, "/api/v1/nodes/n1/status").len(), 2);
}

#[test]
fn existing_node_is_reused_and_lease_conflict_retried() {
    let mut h = Harness::new();
    h.api.nodes.insert("n1".into(), json!({"metadata": {"name": "n1", "uid": "old-uid"}}));
    h.api.leases.insert("n1".into(), json!({"metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": "7"}, "spec": {}}));
    h.step();
    assert!(h.agent.registered());
    assert_eq!(h.agent.node_uid(), Some("old-uid"));
    assert_eq!(h.requests(Method::Post, "/api/v1/nodes").len(), 1);
    let gets = h.requests(Method::Get, "/api/v1/nodes/n1");
    assert_eq!(gets.iter().filter(|(p, _)| p == "/api/v1/nodes/n1").count(), 1, "{gets:?}");
    assert_eq!(h.requests(Method::Post, "/leases").len(), 0, "existing lease reused");
    assert_eq!(h.requests(Method::Put, "/leases/n1").len(), 1);
    // Someone else updates the lease: our next PUT conflicts, we GET and retry at once.
    h.api.leases.get_mut("n1").unwrap()["metadata"]["resourceVersion"] = json!("999");
    h.advance(10);
    let puts = h.requests(Method::Put, "/leases/n1");
    assert_eq!(puts.len(), 3, "conflicting PUT then a retried PUT");
    assert_eq!(puts[2].1["metadata"]["resourceVersion"], "999");
    assert_eq!(h.api.leases["n1"]["metadata"]["resourceVersion"], json!((h.api.rv).to_string()));
}

#[test]
fn registration_backs_off_exponentially() {
    let mut h = Harness::new();
    for _ in 0..6 {
        h.api.inject.push_back((
            "/api/v1/nodes".into(),
            Method::Post,
            500,
            status_body(500, "InternalError"),
        ));
    }
    let mut times = Vec::new();
    for _ in 0..200 {
        let before = h.requests(Method::Post, "/api/v1/nodes").len();
        h.step();
        if h.requests(Method::Post, "/api/v1/nodes").len() > before {
            times.push(h.now.micros() / 1000);
        }
        h.now = h.now.plus_millis(50);
    }
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 100 ms doubling (rounded up to the 50 ms step).
    assert_eq!(&gaps[..5], &[100, 200, 400, 800, 1600]);
    assert!(h.agent.registered());
}

#[test]
fn runs_pods_reports_status_and_deletes_gracefully() {
    let mut h = Harness::new();
    h.add_pod("job", "Never", "echo hi; sleep 3; exit 0");
    h.add_pod("web", "Always", "echo serving; sleep infinity");
    h.step();
    let lists = h.requests(Method::Get, "/api/v1/pods?");
    assert!(lists[0].0.contains("limit=500&resourceVersion=0"), "{}", lists[0].0);
    assert_eq!(h.api.pods["job"]["status"]["phase"], "Running");
    assert!(h.api.pods["web"]["status"]["containerStatuses"][0]["state"]["running"].is_object());
    let reasons = h.event_reasons("job");
    assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"]);
    assert_eq!(
        h.api.events.iter().find(|e| e["involvedObject"]["name"] == "job").unwrap()["involvedObject"]
            ["fieldPath"],
        "spec.containers{app}"
    );
    h.advance(4);
    let job = &h.api.pods["job"]["status"];
    assert_eq!(job["phase"], "Succeeded");
    assert_eq!(job["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    // Every pod status patch carries the uid.
    for (_, b) in h.requests(Method::Patch, "/pods/") {
        assert!(b["metadata"]["uid"].is_string());
    }
    // Graceful deletion of "web": the server marks it, the watch delivers MODIFIED.
    let mut web = h.api.pods["web"].clone();
    web["metadata"]["deletionTimestamp"] = json!("2024-12-11T10:01:00Z");
    web["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    h.api.pods.insert("web".into(), web.clone());
    h.api.watch_lines.push_back(json!({"type": "MODIFIED", "object": web}).to_string());
    h.advance(2);
    assert!(h.api.events.iter().any(|e| e["reason"] == "Killing" && e["involvedObject"]["name"] == "web"));
    let dels = h.requests(Method::Delete, "/pods/web");
    assert_eq!(dels.len(), 1);
    assert_eq!(
        dels[0].1,
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": "uid-web"}})
    );
    assert!(!h.api.pods.contains_key("web"));
    // The terminal status was patched before the delete.
    let last_patch = h.requests(Method::Patch, "/pods/web/status").pop().unwrap().1;
    assert_eq!(last_patch["status"]["phase"], "Failed");
    assert!(h.agent.pods().iter().all(|(_, n, _)| n != "web"));
}

#[test]
fn relists_after_410_and_handles_added_deleted() {
    let mut h = Harness::new();
    h.step();
    assert!(h.api.watch_open);
    let p = h.add_pod("late", "Always", "sleep infinity");
    h.api.watch_lines.push_back(json!({"type": "ADDED", "object": p}).to_string());
    h.api.watch_lines.push_back(json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "555"}}}).to_string());
    h.step();
    assert_eq!(h.agent.pods().len(), 1);
    assert_eq!(h.api.pods["late"]["status"]["phase"], "Running");
    // The server expires the watch: ERROR 410, then the stream ends; the agent relists with RV "".
    h.api.watch_lines.push_back(
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 5 (1200)", "reason": "Expired", "code": 410}}).to_string(),
    );
    h.step();
    h.api.watch_open = false;
    h.agent.on_watch_end(h.now, Ok(200));
    h.api.pods.remove("late");
    h.step();
    let lists: Vec<String> = h
        .requests(Method::Get, "/api/v1/pods?")
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 2);
    assert!(lists[0].contains("&resourceVersion=0"), "{}", lists[0]);
    assert!(lists[1].ends_with("&resourceVersion="), "{}", lists[1]);
    assert!(h.agent.pods().is_empty(), "pod gone from the relist is dropped");
    // A re-watch resumes from the list's resourceVersion.
    let watch = h.api.log.iter().rev().find(|(_, p, _)| p.contains("watch=true")).unwrap().1.clone();
    assert!(watch.contains(&format!("resourceVersion={}", h.api.rv)), "{watch}");
    // A watch that ends cleanly is re-opened from the last RV seen.
    h.api.watch_open = false;
    h.agent.on_watch_end(h.now, Ok(200));
    h.step();
    assert!(h.api.watch_open);
}

#[test]
fn admission_rejects_pods_that_do_not_fit() {
    let mut h = Harness::new();
    let mut p = h.add_pod("big", "Always", "sleep infinity");
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "3"}});
    h.api.pods.insert("big".into(), p);
    let mut q = h.add_pod("fat", "Always", "sleep infinity");
    q["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "8Gi"}});
    h.api.pods.insert("fat".into(), q);
    h.step();
    let big = &h.api.pods["big"]["status"];
    assert_eq!(big["phase"], "Failed");
    assert_eq!(big["reason"], "OutOfcpu");
    assert_eq!(
        big["message"],
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
    );
    let fat = &h.api.pods["fat"]["status"];
    assert_eq!(fat["reason"], "OutOfmemory");
    assert!(h.api.events.iter().any(|e| e["reason"] == "OutOfcpu" && e["type"] == "Warning"));
    assert!(
        kubelet_lite::runtime::Runtime::logs(&h.rt, "default", "big", "app", false).is_none(),
        "nothing started"
    );
}

#[test]
fn schema_walker_catches_bad_objects() {
    let Some(s) = schema::Schemas::load() else { return };
    let good = json!({"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-12-11T10:00:00Z"});
    assert!(s.validate("io.k8s.api.core.v1.NodeCondition", &good).is_empty());
    let missing = json!({"type": "Ready"});
    assert_eq!(
        s.validate("io.k8s.api.core.v1.NodeCondition", &missing),
        ["io.k8s.api.core.v1.NodeCondition: missing required status"]
    );
    let unknown = json!({"type": "Ready", "status": "True", "bogus": 1});
    assert_eq!(s.validate("io.k8s.api.core.v1.NodeCondition", &unknown).len(), 1);
    let bad_type = json!({"kubeletEndpoint": {"Port": "10250"}});
    assert_eq!(s.validate("io.k8s.api.core.v1.NodeDaemonEndpoints", &bad_type).len(), 1);
    let bad_time = json!({"type": "Ready", "status": "True", "lastHeartbeatTime": "yesterday"});
    assert_eq!(s.validate("io.k8s.api.core.v1.NodeCondition", &bad_time).len(), 1);
}

#[test]
fn repeated_events_are_counted_on_one_event() {
    let mut h = Harness::new();
    h.add_pod("crash", "Always", "echo boom; exit 1");
    h.step();
    h.advance(80);
    let backoffs: Vec<&Value> = h
        .api
        .events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "crash" && e["reason"] == "BackOff")
        .collect();
    assert_eq!(backoffs.len(), 1, "one BackOff event, counted: {backoffs:#?}");
    let count = backoffs[0]["count"].as_i64().unwrap();
    assert!(count >= 2, "{count}");
    assert_ne!(backoffs[0]["firstTimestamp"], backoffs[0]["lastTimestamp"]);
    let name = backoffs[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(h.requests(Method::Patch, &format!("/events/{name}")).len() as i64, count - 1);
    // Every restart repeats Pulled/Created/Started: counted too, one event each.
    let started: Vec<&Value> = h
        .api
        .events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "crash" && e["reason"] == "Started")
        .collect();
    assert_eq!(started.len(), 1);
    assert!(started[0]["count"].as_i64().unwrap() >= 3);
    // The event went away on the server: the next repeat is sent whole, with its count.
    h.api.events.retain(|e| e["reason"] != "BackOff");
    h.advance(90);
    let again: Vec<&Value> = h.api.events.iter().filter(|e| e["reason"] == "BackOff").collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(again[0]["count"].as_i64().unwrap() > count);
}

#[test]
fn events_survive_an_outage_and_are_delivered_once() {
    let mut h = Harness::new();
    h.step();
    assert!(h.agent.registered());
    let before = h.api.events.len();
    // The server refuses every event for a while.
    for _ in 0..8 {
        h.api.inject.push_back(("/events".into(), Method::Post, 503, status_body(503, "ServiceUnavailable")));
    }
    h.add_pod("job", "Never", "echo hi; exit 0");
    // The watch is open: tell the agent about the pod.
    let pod = h.api.pods["job"].clone();
    h.api.watch_lines.push_back(json!({"type": "ADDED", "object": pod}).to_string());
    h.step();
    assert!(h.agent.pending_events() > 0, "refused events are kept");
    assert_eq!(h.api.events.len(), before);
    h.advance(40);
    assert_eq!(h.agent.pending_events(), 0);
    assert_eq!(h.agent.dropped_events(), 0);
    let reasons = h.event_reasons("job");
    assert_eq!(reasons, ["Pulling", "Pulled", "Created", "Started"], "each once, in order");
    // Retries were spaced: no POST storm while the server refused.
    assert!(h.requests(Method::Post, "/events").len() <= before + 8 + 4 + 4, "too many tries");
}

#[test]
fn a_pod_status_changed_by_someone_else_is_put_back() {
    let mut h = Harness::new();
    h.add_pod("web", "Always", "echo serving; sleep infinity");
    h.step();
    h.advance(2);
    assert_eq!(h.api.pods["web"]["status"]["phase"], "Running");
    let patches = |h: &Harness| h.requests(Method::Patch, "/pods/web/status").len();
    let before = patches(&h);
    // Quiet: no patches while nothing changes, even with watch events about other fields.
    let mut labelled = h.api.pods["web"].clone();
    labelled["metadata"]["labels"] = json!({"touched": "yes"});
    labelled["metadata"]["resourceVersion"] = json!("9001");
    h.api.pods.insert("web".into(), labelled.clone());
    h.api.watch_lines.push_back(json!({"type": "MODIFIED", "object": labelled}).to_string());
    h.advance(30);
    assert_eq!(patches(&h), before, "no status change, no patch");
    // Someone writes a wrong phase: the node puts its own status back.
    let mut wrong = h.api.pods["web"].clone();
    wrong["status"]["phase"] = json!("Failed");
    wrong["metadata"]["resourceVersion"] = json!("9002");
    h.api.pods.insert("web".into(), wrong.clone());
    h.api.watch_lines.push_back(json!({"type": "MODIFIED", "object": wrong}).to_string());
    h.advance(2);
    assert_eq!(h.api.pods["web"]["status"]["phase"], "Running");
    assert_eq!(patches(&h), before + 1);
    h.advance(30);
    assert_eq!(patches(&h), before + 1, "settled");
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `kubernetes.io/dockerconfigjson` Secret in `default` giving `user:pass` for `server`.
fn docker_secret(name: &str, server: &str, user: &str, pass: &str) -> Value {
    let auth = base64(format!("{user}:{pass}").as_bytes());
    let config = json!({"auths": {server: {"username": user, "password": pass, "auth": auth}}}).to_string();
    json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default"},
           "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": base64(config.as_bytes())}})
}

fn private_pod(h: &mut Harness, name: &str, image: &str, secrets: &[&str]) {
    let mut p = h.add_pod(name, "Always", "sleep infinity");
    p["spec"]["containers"][0]["image"] = json!(image);
    p["spec"]["imagePullSecrets"] = json!(secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>());
    h.api.pods.insert(name.into(), p);
}

fn registry_needs(h: &mut Harness, registry: &str, user: &str, pass: &str) {
    h.rt.private_registries.push(RegistryAuth {
        registry: registry.into(),
        username: user.into(),
        password: pass.into(),
    });
}

fn waiting_reason(h: &Harness, pod: &str) -> Value {
    h.api.pods[pod]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone()
}

#[test]
fn pulls_wait_for_the_pods_pull_secrets_and_use_their_credentials() {
    let mut h = Harness::new();
    registry_needs(&mut h, "127.0.0.1:5000", "u", "p");
    h.api.secrets.insert("regcred".into(), docker_secret("regcred", "https://127.0.0.1:5000/v2/", "u", "p"));
    private_pod(&mut h, "private", "127.0.0.1:5000/app:1", &["regcred", "regcred", ""]);
    h.add_pod("public", "Always", "sleep infinity");
    h.step();
    // One GET for the name given twice (the empty one is skipped), before the pull started.
    let gets: Vec<usize> = h
        .api
        .log
        .iter()
        .enumerate()
        .filter(|(_, (m, p, _))| *m == Method::Get && p.contains("/secrets/"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(gets.len(), 1, "{:?}", h.requests(Method::Get, "/secrets/"));
    assert_eq!(h.api.log[gets[0]].1, "/api/v1/namespaces/default/secrets/regcred");
    let first_pulling = h
        .api
        .log
        .iter()
        .position(|(_, p, b)| {
            p.ends_with("/events") && b["reason"] == "Pulling" && b["involvedObject"]["name"] == "private"
        })
        .expect("a Pulling event");
    assert!(gets[0] < first_pulling, "the secret is read before the pull");
    assert_eq!(h.api.pods["private"]["status"]["phase"], "Running", "{:#}", h.api.pods["private"]["status"]);
    assert_eq!(h.event_reasons("private"), ["Pulling", "Pulled", "Created", "Started"]);
    assert_eq!(h.api.pods["public"]["status"]["phase"], "Running");
    // Later syncs read nothing again: the image is there (IfNotPresent for a tag).
    h.advance(30);
    assert_eq!(h.requests(Method::Get, "/secrets/").len(), 1);
}

#[test]
fn unreadable_pull_secrets_are_a_warning_and_the_pull_goes_on_without_them() {
    let mut h = Harness::new();
    registry_needs(&mut h, "127.0.0.1:5000", "u", "p");
    // Readable, but for another registry.
    h.api.secrets.insert("elsewhere".into(), docker_secret("elsewhere", "registry.example.com", "x", "y"));
    let mut garbage = docker_secret("garbage", "127.0.0.1:5000", "u", "p");
    garbage["data"][".dockerconfigjson"] = json!("not base64!");
    h.api.secrets.insert("garbage".into(), garbage);
    h.api.inject.push_back(("/secrets/forbidden".into(), Method::Get, 403, status_body(403, "Forbidden")));
    let huge = json!({"kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "A".repeat(1 << 20)}});
    h.api.inject.push_back(("/secrets/huge".into(), Method::Get, 200, huge));
    private_pod(
        &mut h,
        "private",
        "127.0.0.1:5000/app:1",
        &["missing", "forbidden", "garbage", "huge", "elsewhere"],
    );
    h.step();
    let warnings: Vec<&Value> =
        h.api.events.iter().filter(|e| e["reason"] == "FailedToRetrieveImagePullSecret").collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let w = warnings[0];
    assert_eq!(w["type"], "Warning");
    assert_eq!(
        w["message"],
        "Unable to retrieve some image pull secrets (missing, forbidden, garbage, huge); attempting to pull the image may not succeed."
    );
    assert_eq!(w["involvedObject"]["kind"], "Pod");
    assert_eq!(w["involvedObject"]["name"], "private");
    assert!(w["involvedObject"].get("fieldPath").is_none(), "about the pod, not a container");
    // The pull went on, without the right credentials.
    assert!(
        h.api.events.iter().any(|e| e["reason"] == "Failed"
            && e["message"].as_str().unwrap().starts_with("Failed to pull image \"127.0.0.1:5000/app:1\"")
            && e["message"].as_str().unwrap().ends_with("401 unauthorized")),
        "{:#?}",
        h.api.events
    );
    assert!(h.api.events.iter().any(|e| e["message"] == "Error: ErrImagePull"));
    // ErrImagePull is shown for 10 s after a failed pull, then ImagePullBackOff.
    assert_eq!(waiting_reason(&h, "private"), "ErrImagePull");
    assert_eq!(h.event_reasons("private")[..2], ["FailedToRetrieveImagePullSecret", "Pulling"]);
    // The secret appears; the next pull (after the 10 s back-off) reads the secrets again and
    // succeeds.
    h.api.secrets.insert("missing".into(), docker_secret("missing", "http://127.0.0.1:5000", "u", "p"));
    h.advance(5);
    assert_eq!(h.requests(Method::Get, "/secrets/missing").len(), 1, "no reading during the back-off");
    assert_eq!(waiting_reason(&h, "private"), "ErrImagePull", "shown until the retry at 10 s");
    h.advance(7);
    assert_eq!(h.requests(Method::Get, "/secrets/missing").len(), 2);
    assert_eq!(h.api.pods["private"]["status"]["phase"], "Running", "{:#}", h.api.pods["private"]["status"]);
    // The second reading: `missing` is there now; `elsewhere` was read both times (it only
    // holds no credentials for this registry).
    let second = "Unable to retrieve some image pull secrets (forbidden, garbage, huge); attempting to pull the image may not succeed.";
    assert!(h.api.events.iter().any(|e| e["message"] == second), "{:#?}", h.api.events);
    assert_eq!(h.requests(Method::Get, "/secrets/elsewhere").len(), 2);
}

#[test]
fn pull_secrets_are_bounded_and_bad_names_never_reach_the_server() {
    let mut h = Harness::new();
    let mut names: Vec<String> = vec!["../nodes/n2".into(), "Upper".into()];
    names.extend((0..30).map(|i| format!("s{i}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    private_pod(&mut h, "many", "busybox:1.36", &refs);
    h.step();
    let gets = h.requests(Method::Get, "/secrets/");
    assert_eq!(gets.len(), kubelet_lite::pullsecrets::MAX_PULL_SECRETS - 2, "{gets:?}");
    assert!(gets.iter().all(|(p, _)| p.starts_with("/api/v1/namespaces/default/secrets/s")), "{gets:?}");
    let listed: Vec<&str> =
        names.iter().take(kubelet_lite::pullsecrets::MAX_PULL_SECRETS).map(String::as_str).collect();
    let message = format!(
        "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
        listed.join(", ")
    );
    assert!(h.api.events.iter().any(|e| e["message"] == message.as_str()), "{:#?}", h.api.events);
    assert_eq!(h.api.pods["many"]["status"]["phase"], "Running", "public images need no credentials");
}

#[test]
fn a_failed_fetch_on_the_wire_counts_as_unreadable() {
    let mut h = Harness::new();
    private_pod(&mut h, "p", "busybox:1.36", &["regcred"]);
    h.api.secrets.insert("regcred".into(), docker_secret("regcred", "127.0.0.1:5000", "u", "p"));
    // Drive the agent by hand: the GET's connection breaks.
    let mut seen_get = false;
    for _ in 0..10 {
        let out = h.agent.tick(h.now, &mut h.rt);
        for o in out {
            if o.op == Op::WatchPods {
                continue;
            }
            if matches!(o.op, Op::GetSecret { .. }) {
                seen_get = true;
                h.agent.on_response(o.op, Err(()), h.now, &mut h.rt);
                continue;
            }
            let (code, body) = h.api.handle(&o.request);
            let bytes = serde_json::to_vec(&body).unwrap();
            h.agent.on_response(o.op, Ok((code, &bytes)), h.now, &mut h.rt);
        }
    }
    assert!(seen_get);
    assert_eq!(h.event_reasons("p")[0], "FailedToRetrieveImagePullSecret");
    assert_eq!(h.api.pods["p"]["status"]["phase"], "Running");
    // Answers for a pod that is gone, or a name never asked, change nothing.
    for op in [
        Op::GetSecret { uid: "nobody".into(), name: "regcred".into() },
        Op::GetSecret { uid: "uid-p".into(), name: "other".into() },
    ] {
        h.agent.on_response(op, Ok((200, b"{}")), h.now, &mut h.rt);
    }
    h.step();
    assert_eq!(h.api.pods["p"]["status"]["phase"], "Running");
}
