//! The node agent as a state machine. The host calls [`Agent::tick`] with the current time;
//! it returns the requests to send now. The host sends each one and hands the reply to
//! [`Agent::on_response`]; the watch request ([`Op::WatchPods`]) is streamed, its lines fed
//! to [`Agent::on_watch_line`] and its end reported with [`Agent::on_watch_end`].
//!
//! What it does, following the upstream kubelet (node registration and status in
//! `pkg/kubelet/kubelet_node_status.go`: `registerWithAPIServer`, `updateNodeStatus`; the node
//! lease as the lease controller of `k8s.io/component-helpers/apimachinery/lease` renews it; pod
//! status as `pkg/kubelet/status/status_manager.go` reports it): registers the Node (POST; 409 →
//! GET and reuse), patches the node status every 10 s when it changed (or every 5 min), keeps
//! the node Lease
//! renewed every 10 s (create on 404, GET and retry on 409), lists and watches the pods
//! bound to the node (relist on 410), runs them through [`PodWorker`]s, patches their
//! status, records core/v1 events, and deletes terminated pods with a uid precondition.
//! Before a pod's image pulls it reads the pod's image pull secrets (`GET .../secrets/NAME`,
//! at most [`MAX_PULL_SECRETS`] of them, each reply at most [`MAX_SECRET_RESPONSE_BYTES`]) into
//! registry credentials ([`crate::pullsecrets`]); one that cannot be read is a Warning event
//! `FailedToRetrieveImagePullSecret` on the pod, and the pull goes on without it, as the
//! kubelet's `getPullSecretsForPod` has it.
//! Every failure backs off exponentially. Replies are parsed as allegations: malformed
//! JSON is an error for that request, never a panic.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use serde_json::{json, Value};

use crate::http::{encode_query, Method, Request, CONTENT_JSON, CONTENT_SMP};
use crate::pods::{pod_requests, PodEvent, PodWorker};
use crate::pullsecrets::{registry_auths, valid_secret_name, MAX_PULL_SECRETS, MAX_SECRET_RESPONSE_BYTES};
use crate::runtime::{RegistryAuth, Runtime};
use crate::time::Time;
use crate::types::{
    ContainerImage, DaemonEndpoint, DeleteOptions, Event, EventSource, Node, NodeAddress, NodeCondition,
    NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, ObjectMeta, ObjectReference, Pod, PodList,
    Preconditions, ResourceList, Status, WatchEvent,
};
use wire::quantity;

/// Node status is computed this often.
pub const STATUS_UPDATE_SECS: u64 = 10;
/// Node status is reported at least this often even when unchanged.
pub const STATUS_REPORT_SECS: u64 = 300;
/// The lease is renewed this often (40 s × 0.25).
pub const LEASE_RENEW_SECS: u64 = 10;
/// `spec.leaseDurationSeconds` of the node lease.
pub const LEASE_DURATION_SECS: i32 = 40;
/// Lease update conflicts retried before backing off.
pub const LEASE_MAX_CONFLICTS: u32 = 5;
/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// A repeat of an event within this long is counted on the first one (client-go's
/// correlator keeps its cache for 10 minutes).
pub const EVENT_AGGREGATE_SECS: u64 = 600;
/// Tries to deliver one event, 10 s apart, before it is dropped (client-go: 12).
pub const EVENT_MAX_TRIES: u32 = 12;
/// Events waiting for delivery beyond this many drop the oldest (counted in
/// [`Agent::dropped_events`]), so an unreachable server cannot exhaust memory.
pub const EVENT_QUEUE_MAX: usize = 1000;
/// Distinct events remembered for aggregation.
const EVENT_SEEN_MAX: usize = 512;

/// What this node reports about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub name: String,
    /// The InternalIP address (also the pods' hostIP).
    pub internal_ip: String,
    /// The port of the containerLogs endpoint (`daemonEndpoints.kubeletEndpoint.Port`).
    pub kubelet_port: i32,
    pub capacity: ResourceList,
    pub allocatable: ResourceList,
    pub node_info: NodeSystemInfo,
    /// The first three octets of pod IPs (`10.88.0` gives 10.88.0.2, 10.88.0.3, ...).
    pub pod_net: String,
}

/// Which request a reply belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    RegisterNode,
    GetNode,
    /// The server's copy of the Node, read before every status report.
    GetNodeStatus,
    PatchNodeStatus,
    GetLease,
    CreateLease,
    RenewLease,
    ListPods,
    /// Streamed: lines go to [`Agent::on_watch_line`], the end to [`Agent::on_watch_end`].
    WatchPods,
    PatchPodStatus {
        uid: String,
    },
    DeletePod {
        uid: String,
    },
    /// A new event (or one whose aggregate was lost): `POST .../events`.
    PostEvent {
        id: u64,
    },
    /// A repeat of a sent event: `PATCH .../events/NAME` with the new count.
    PatchEvent {
        id: u64,
    },
    /// One of a pod's image pull secrets: `GET /api/v1/namespaces/NS/secrets/NAME`.
    GetSecret {
        uid: String,
        name: String,
    },
}

/// A request to send, tagged with what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub op: Op,
    pub request: Request,
}

/// Exponential back-off: `initial` doubling up to `max` (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    next_ms: u64,
}

impl Backoff {
    /// A back-off starting at `initial_ms`, capped at `max_ms`.
    pub const fn new(initial_ms: u64, max_ms: u64) -> Self {
        Backoff { initial_ms, max_ms, next_ms: initial_ms }
    }
    /// When to try again after a failure at `now`; doubles the next delay.
    pub fn fail(&mut self, now: Time) -> Time {
        let d = self.next_ms;
        self.next_ms = d.saturating_mul(2).min(self.max_ms);
        now.plus_millis(d)
    }
    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.next_ms = self.initial_ms;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Post,
    Get,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseStep {
    Get,
    Create,
    Renew,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// List next (at the time given).
    List(Time),
    /// Watch next (at the time given).
    Watch(Time),
    Busy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delete {
    No,
    InFlight,
}

#[derive(Debug)]
struct Slot {
    worker: PodWorker,
    /// The status last acknowledged by the server, as JSON.
    acked: Option<String>,
    /// The status in flight, as JSON.
    sending: Option<String>,
    /// The pod's resourceVersion after our last acknowledged status write.
    acked_rv: Option<String>,
    /// When the server's copy was last found to differ and the status re-sent.
    reconciled_at: Option<Time>,
    delete: Delete,
    /// The pod's image pull secrets being fetched.
    secrets: Option<SecretRound>,
}

/// One reading of a pod's image pull secrets: the names asked for, in the pod's order, and
/// what each answer gave (`None` while it is on the wire; `Err` when the secret could not be
/// read or held no credentials that could be parsed).
#[derive(Debug)]
struct SecretRound {
    names: Vec<String>,
    answers: Vec<Option<Result<Vec<RegistryAuth>, ()>>>,
}

impl SecretRound {
    /// A round for `names` (the first [`MAX_PULL_SECRETS`]); a name that cannot name a Secret
    /// is answered at once as unreadable.
    fn new(mut names: Vec<String>) -> Self {
        names.truncate(MAX_PULL_SECRETS);
        let answers = names.iter().map(|n| (!valid_secret_name(n)).then_some(Err(()))).collect();
        SecretRound { names, answers }
    }

    fn done(&self) -> bool {
        self.answers.iter().all(Option::is_some)
    }
}

/// The node agent.
#[derive(Debug)]
pub struct Agent {
    cfg: NodeConfig,
    started: Time,
    reg: Reg,
    reg_busy: bool,
    reg_at: Time,
    reg_backoff: Backoff,
    node_uid: Option<String>,
    status_busy: bool,
    status_at: Time,
    status_sent: Option<(String, Time)>,
    status_sending: Option<String>,
    /// The server's node status (heartbeats blanked) from the last [`Op::GetNodeStatus`].
    status_server: Option<String>,
    lease: Option<Value>,
    lease_step: LeaseStep,
    lease_busy: bool,
    lease_at: Time,
    lease_backoff: Backoff,
    lease_conflicts: u32,
    source: Source,
    list_rv: String,
    last_rv: String,
    watch_backoff: Backoff,
    watch_expired: bool,
    slots: BTreeMap<String, Slot>,
    /// Pods already terminal in the API that only need the final delete: uid → (ns, name).
    orphans: BTreeMap<String, (String, String, bool)>,
    /// Events waiting to be sent (or re-sent), oldest first.
    events: alloc::collections::VecDeque<PendingEvent>,
    /// Events on the wire, by id.
    events_in_flight: BTreeMap<u64, PendingEvent>,
    /// Events sent, by what makes two of them the same: for counting repeats.
    events_seen: BTreeMap<String, SeenEvent>,
    event_seq: u64,
    dropped_events: u64,
    next_ip: u32,
    /// The runtime's images as Node.status.images reports them.
    images: Vec<ContainerImage>,
}

/// Most images Node.status.images lists (the kubelet's `nodeStatusMaxImages`).
pub const MAX_NODE_IMAGES: usize = 50;
/// Most names listed per image (the kubelet's `maxNamesPerImageInNodeStatus`).
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// The images as the kubelet lists them: largest first, at most [`MAX_NODE_IMAGES`], each
/// with at most [`MAX_NAMES_PER_IMAGE`] names.
pub fn node_images(mut images: Vec<crate::runtime::ImageInfo>) -> Vec<ContainerImage> {
    images.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then_with(|| a.names.cmp(&b.names)));
    images
        .into_iter()
        .take(MAX_NODE_IMAGES)
        .map(|i| ContainerImage {
            names: i.names.into_iter().take(MAX_NAMES_PER_IMAGE).collect(),
            size_bytes: i64::try_from(i.size_bytes).unwrap_or(i64::MAX),
        })
        .collect()
}

/// An event to deliver.
#[derive(Clone, Debug, PartialEq)]
struct PendingEvent {
    event: Event,
    /// A repeat: PATCH the count of the event already sent.
    patch: bool,
    tries: u32,
    at: Time,
}

/// What was sent for one kind of event.
#[derive(Clone, Debug, PartialEq)]
struct SeenEvent {
    name: String,
    count: i32,
    first: String,
    last: Time,
}

/// The part of a pod status the kubelet owns, in a canonical order: conditions of other
/// owners (readiness gates, DisruptionTarget) are left out.
fn kubelet_owned(status: &crate::types::PodStatus) -> crate::types::PodStatus {
    const OWNED: [&str; 5] =
        ["PodScheduled", "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"];
    let mut s = status.clone();
    s.conditions.retain(|c| OWNED.contains(&c.type_.as_str()));
    s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    s.container_statuses.sort_by(|a, b| a.name.cmp(&b.name));
    s
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Agent {
    /// An agent for the node described by `cfg`, starting at `now`.
    pub fn new(cfg: NodeConfig, now: Time) -> Self {
        Agent {
            cfg,
            started: now,
            reg: Reg::Post,
            reg_busy: false,
            reg_at: now,
            reg_backoff: Backoff::new(100, 7000),
            node_uid: None,
            status_busy: false,
            status_at: now,
            status_sent: None,
            status_sending: None,
            status_server: None,
            lease: None,
            lease_step: LeaseStep::Get,
            lease_busy: false,
            lease_at: now,
            lease_backoff: Backoff::new(200, 7000),
            lease_conflicts: 0,
            source: Source::List(now),
            list_rv: "0".into(),
            last_rv: String::new(),
            watch_backoff: Backoff::new(1000, 30_000),
            watch_expired: false,
            slots: BTreeMap::new(),
            orphans: BTreeMap::new(),
            events: alloc::collections::VecDeque::new(),
            events_in_flight: BTreeMap::new(),
            events_seen: BTreeMap::new(),
            event_seq: 0,
            dropped_events: 0,
            next_ip: 2,
            images: Vec::new(),
        }
    }

    /// True once the Node exists on the server.
    pub fn registered(&self) -> bool {
        self.reg == Reg::Done
    }

    /// The Node's uid, once known.
    pub fn node_uid(&self) -> Option<&str> {
        self.node_uid.as_deref()
    }

    /// The workers' pods, for inspection: (namespace, name, uid).
    pub fn pods(&self) -> Vec<(String, String, String)> {
        self.slots
            .values()
            .map(|s| (s.worker.namespace.clone(), s.worker.name.clone(), s.worker.uid.clone()))
            .collect()
    }

    /// The node's labels and annotations as the kubelet sets them.
    fn node_object(&self, now: Time) -> Node {
        let name = &self.cfg.name;
        let arch = &self.cfg.node_info.architecture;
        let os = &self.cfg.node_info.operating_system;
        let labels = [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", os.as_str()),
            ("kubernetes.io/arch", arch.as_str()),
            ("beta.kubernetes.io/os", os.as_str()),
            ("beta.kubernetes.io/arch", arch.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut annotations = BTreeMap::new();
        annotations.insert("volumes.kubernetes.io/controller-managed-attach-detach".into(), "true".into());
        Node {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(self.node_status(now)),
        }
    }

    /// The full NodeStatus, as the kubelet's status setters fill it
    /// (`pkg/kubelet/nodestatus/setters.go`). Ready is False with KubeletNotReady when a
    /// required capacity is missing, as that file's `ReadyCondition` setter has it.
    pub fn node_status(&self, now: Time) -> NodeStatus {
        let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
            .into_iter()
            .filter(|r| !self.cfg.capacity.contains_key(*r))
            .collect();
        let (ready, reason, message) = if missing.is_empty() {
            ("True", "KubeletReady", String::from("kubelet is posting ready status"))
        } else {
            (
                "False",
                "KubeletNotReady",
                format!("missing node capacity for resources: {}", missing.join(", ")),
            )
        };
        let hb = now.rfc3339();
        let tt = self.started.rfc3339();
        let cond = |t: &str, s: &str, r: &str, m: &str| NodeCondition {
            type_: t.into(),
            status: s.into(),
            last_heartbeat_time: Some(hb.clone()),
            last_transition_time: Some(tt.clone()),
            reason: Some(r.into()),
            message: Some(m.into()),
        };
        NodeStatus {
            capacity: self.cfg.capacity.clone(),
            allocatable: self.cfg.allocatable.clone(),
            conditions: vec![
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond("Ready", ready, reason, &message),
            ],
            addresses: vec![
                NodeAddress { type_: "InternalIP".into(), address: self.cfg.internal_ip.clone() },
                NodeAddress { type_: "Hostname".into(), address: self.cfg.name.clone() },
            ],
            daemon_endpoints: NodeDaemonEndpoints {
                kubelet_endpoint: DaemonEndpoint { port: self.cfg.kubelet_port },
            },
            node_info: self.cfg.node_info.clone(),
            images: self.images.clone(),
        }
    }

    /// The status with heartbeat times blanked: equal keys mean "unchanged".
    fn status_key(status: &NodeStatus) -> String {
        let mut s = status.clone();
        for c in &mut s.conditions {
            c.last_heartbeat_time = None;
        }
        String::from_utf8(to_json(&s)).unwrap_or_default()
    }

    /// The strategic merge patch for `PATCH nodes/NAME/status`, shaped as the one the kubelet's
    /// `tryUpdateNodeStatus` sends (`nodeutil.PatchNodeStatus` of `k8s.io/component-helpers`).
    pub fn node_status_patch(status: &NodeStatus) -> Value {
        let mut st = serde_json::to_value(status).unwrap_or(Value::Null);
        let order: Vec<Value> = status.conditions.iter().map(|c| json!({"type": c.type_})).collect();
        if let Some(obj) = st.as_object_mut() {
            obj.insert("$setElementOrder/conditions".into(), Value::Array(order));
            if let Some(Value::Array(a)) = obj.get_mut("addresses") {
                a.push(json!({"$patch": "replace"}));
            }
        }
        json!({ "status": st })
    }

    fn node_event(&mut self, reason: &str, message: String, now: Time) {
        let name = self.cfg.name.clone();
        let obj = ObjectReference {
            kind: Some("Node".into()),
            name: Some(name.clone()),
            uid: Some(name),
            ..Default::default()
        };
        self.push_event(obj, "default".into(), "Normal", reason, message, now);
    }

    fn push_event(
        &mut self,
        obj: ObjectReference,
        ns: String,
        type_: &str,
        reason: &str,
        message: String,
        now: Time,
    ) {
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{type_}\u{0}{reason}\u{0}{message}",
            obj.kind.as_deref().unwrap_or(""),
            ns,
            obj.name.as_deref().unwrap_or(""),
            obj.uid.as_deref().unwrap_or(""),
            obj.field_path.as_deref().unwrap_or(""),
        );
        let ts = now.rfc3339();
        let repeat = self
            .events_seen
            .get_mut(&key)
            .filter(|seen| now.millis_since(seen.last) < EVENT_AGGREGATE_SECS * 1000)
            .map(|seen| {
                seen.count = seen.count.saturating_add(1);
                seen.last = now;
                (seen.name.clone(), seen.count, seen.first.clone())
            });
        let (name, count, first) = match repeat {
            Some(r) => r,
            None => {
                self.event_seq += 1;
                let nanos = now.micros().saturating_mul(1000).saturating_add(self.event_seq % 1000);
                let name = format!("{}.{:x}", obj.name.as_deref().unwrap_or("object"), nanos);
                if self.events_seen.len() >= EVENT_SEEN_MAX {
                    let oldest = self.events_seen.iter().min_by_key(|(_, v)| v.last).map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.events_seen.remove(&k);
                    }
                }
                self.events_seen
                    .insert(key, SeenEvent { name: name.clone(), count: 1, first: ts.clone(), last: now });
                (name, 1, ts.clone())
            }
        };
        let event = Event {
            api_version: Some("v1".into()),
            kind: Some("Event".into()),
            metadata: ObjectMeta { name: Some(name), namespace: Some(ns), ..Default::default() },
            involved_object: obj,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.cfg.name.clone()),
            }),
            first_timestamp: Some(first),
            last_timestamp: Some(ts),
            count: Some(count),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.cfg.name.clone()),
        };
        self.queue_event(PendingEvent { event, patch: count > 1, tries: 0, at: now });
    }

    fn queue_event(&mut self, e: PendingEvent) {
        if self.events.len() >= EVENT_QUEUE_MAX {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(e);
    }

    /// Events recorded and not yet delivered (queued or on the wire).
    pub fn pending_events(&self) -> usize {
        self.events.len() + self.events_in_flight.len()
    }

    /// Events given up on: the queue overflowed or every try failed.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn lease_body(&self, now: Time) -> Value {
        let owner = self
            .node_uid
            .as_ref()
            .map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": self.cfg.name, "uid": uid}]));
        let mut lease = self.lease.clone().unwrap_or_else(|| {
            json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.cfg.name, "namespace": LEASE_NAMESPACE},
                "spec": {"holderIdentity": self.cfg.name, "leaseDurationSeconds": LEASE_DURATION_SECS}
            })
        });
        if let Some(obj) = lease.as_object_mut() {
            obj.insert("apiVersion".into(), json!("coordination.k8s.io/v1"));
            obj.insert("kind".into(), json!("Lease"));
            if let Some(Value::Object(spec)) = obj.get_mut("spec") {
                spec.insert("renewTime".into(), json!(now.rfc3339_micro()));
                spec.insert("holderIdentity".into(), json!(self.cfg.name));
                spec.insert("leaseDurationSeconds".into(), json!(LEASE_DURATION_SECS));
            }
            if let (Some(Value::Object(meta)), Some(owner)) = (obj.get_mut("metadata"), owner) {
                if meta.get("ownerReferences").is_none_or(|o| o.as_array().is_none_or(|a| a.is_empty())) {
                    meta.insert("ownerReferences".into(), owner);
                }
            }
        }
        lease
    }

    fn pods_path(&self) -> String {
        format!("/api/v1/pods?fieldSelector={}", encode_query(&format!("spec.nodeName={}", self.cfg.name)))
    }

    fn pod_path(ns: &str, name: &str) -> String {
        format!("/api/v1/namespaces/{ns}/pods/{name}")
    }

    /// The pod as the object of its events.
    fn pod_ref(w: &PodWorker) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(w.namespace.clone()),
            name: Some(w.name.clone()),
            uid: Some(w.uid.clone()),
            ..Default::default()
        }
    }

    /// Hands a pod's worker the credentials of a finished round of its pull secrets, with the
    /// kubelet's Warning event when some could not be read.
    fn finish_secrets(&mut self, uid: &str, now: Time) {
        let Some(slot) = self.slots.get_mut(uid) else { return };
        if !slot.secrets.as_ref().is_some_and(SecretRound::done) {
            return;
        }
        let Some(round) = slot.secrets.take() else { return };
        let mut auth = Vec::new();
        let mut failed: Vec<&str> = Vec::new();
        for (name, answer) in round.names.iter().zip(round.answers) {
            match answer {
                Some(Ok(found)) => auth.extend(found),
                _ => failed.push(name),
            }
        }
        slot.worker.set_pull_secrets(auth);
        if !failed.is_empty() {
            let message = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                failed.join(", ")
            );
            let (obj, ns) = (Self::pod_ref(&slot.worker), slot.worker.namespace.clone());
            self.push_event(obj, ns, "Warning", "FailedToRetrieveImagePullSecret", message, now);
        }
    }

    /// Advances every timer and pod worker to `now` and returns the requests to send.
    pub fn tick(&mut self, now: Time, rt: &mut dyn Runtime) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let name = self.cfg.name.clone();
        if self.reg != Reg::Done {
            if !self.reg_busy && now >= self.reg_at {
                self.reg_busy = true;
                out.push(match self.reg {
                    Reg::Get => Outgoing {
                        op: Op::GetNode,
                        request: Request::new(Method::Get, format!("/api/v1/nodes/{name}")),
                    },
                    _ => Outgoing {
                        op: Op::RegisterNode,
                        request: Request::with_body(
                            Method::Post,
                            "/api/v1/nodes".into(),
                            CONTENT_JSON,
                            to_json(&self.node_object(now)),
                        ),
                    },
                });
            }
            return out;
        }

        // Node status.
        self.images = node_images(rt.list_images());
        // As the kubelet does, the computed status is compared with the server's copy, not with
        // what was sent last: a status changed by someone else (the node lifecycle controller
        // marking the node Unknown) is put right at the next update.
        if !self.status_busy && now >= self.status_at && self.status_server.is_none() {
            self.status_busy = true;
            out.push(Outgoing {
                op: Op::GetNodeStatus,
                request: Request::new(Method::Get, format!("/api/v1/nodes/{name}?resourceVersion=0")),
            });
        } else if !self.status_busy && now >= self.status_at {
            self.status_at = now.plus_secs(STATUS_UPDATE_SECS);
            let status = self.node_status(now);
            let key = Self::status_key(&status);
            let server = self.status_server.take();
            let due = server.as_ref() != Some(&key)
                || self
                    .status_sent
                    .as_ref()
                    .is_none_or(|(_, at)| now.millis_since(*at) >= STATUS_REPORT_SECS * 1000);
            if due {
                self.status_busy = true;
                self.status_sending = Some(key);
                out.push(Outgoing {
                    op: Op::PatchNodeStatus,
                    request: Request::with_body(
                        Method::Patch,
                        format!("/api/v1/nodes/{name}/status"),
                        CONTENT_SMP,
                        to_json(&Self::node_status_patch(&status)),
                    ),
                });
            }
        }

        // Lease.
        if !self.lease_busy && now >= self.lease_at {
            self.lease_busy = true;
            let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases");
            out.push(match self.lease_step {
                LeaseStep::Get => Outgoing {
                    op: Op::GetLease,
                    request: Request::new(Method::Get, format!("{path}/{name}")),
                },
                LeaseStep::Create => Outgoing {
                    op: Op::CreateLease,
                    request: Request::with_body(
                        Method::Post,
                        path,
                        CONTENT_JSON,
                        to_json(&self.lease_body(now)),
                    ),
                },
                LeaseStep::Renew => Outgoing {
                    op: Op::RenewLease,
                    request: Request::with_body(
                        Method::Put,
                        format!("{path}/{name}"),
                        CONTENT_JSON,
                        to_json(&self.lease_body(now)),
                    ),
                },
            });
        }

        // Pod source.
        match self.source {
            Source::List(at) if now >= at => {
                self.source = Source::Busy;
                let rv = encode_query(&self.list_rv);
                out.push(Outgoing {
                    op: Op::ListPods,
                    request: Request::new(
                        Method::Get,
                        format!("{}&limit=500&resourceVersion={rv}", self.pods_path()),
                    ),
                });
            }
            Source::Watch(at) if now >= at => {
                self.source = Source::Busy;
                let timeout = 300 + now.secs() % 300;
                out.push(Outgoing {
                    op: Op::WatchPods,
                    request: Request::new(
                        Method::Get,
                        format!(
                            "{}&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={timeout}&watch=true",
                            self.pods_path(),
                            encode_query(&self.last_rv)
                        ),
                    ),
                });
            }
            _ => {}
        }

        // Pods.
        let mut pod_events: Vec<(ObjectReference, String, PodEvent)> = Vec::new();
        let mut secrets_done: Vec<String> = Vec::new();
        for slot in self.slots.values_mut() {
            let w = &mut slot.worker;
            let mut evs = Vec::new();
            w.sync(rt, now, &mut evs);
            if slot.secrets.is_none() && w.wants_pull_secrets() {
                let round = SecretRound::new(w.pull_secret_names());
                for (name, answer) in round.names.iter().zip(&round.answers) {
                    if answer.is_none() {
                        out.push(Outgoing {
                            op: Op::GetSecret { uid: w.uid.clone(), name: name.clone() },
                            request: Request::new(
                                Method::Get,
                                format!("/api/v1/namespaces/{}/secrets/{name}", w.namespace),
                            ),
                        });
                    }
                }
                if round.done() {
                    secrets_done.push(w.uid.clone());
                }
                slot.secrets = Some(round);
            }
            let obj = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(w.namespace.clone()),
                name: Some(w.name.clone()),
                uid: Some(w.uid.clone()),
                resource_version: w.pod.metadata.resource_version.clone(),
                field_path: None,
            };
            for e in evs {
                pod_events.push((obj.clone(), w.namespace.clone(), e));
            }
            if slot.sending.is_some() || slot.delete == Delete::InFlight {
                continue;
            }
            let status = w.status();
            let key = String::from_utf8(to_json(&status)).unwrap_or_default();
            if slot.acked.as_ref() != Some(&key) {
                let body = json!({"metadata": {"uid": w.uid}, "status": status});
                out.push(Outgoing {
                    op: Op::PatchPodStatus { uid: w.uid.clone() },
                    request: Request::with_body(
                        Method::Patch,
                        format!("{}/status", Self::pod_path(&w.namespace, &w.name)),
                        CONTENT_SMP,
                        to_json(&body),
                    ),
                });
                slot.sending = Some(key);
            } else if w.deleting() && w.is_finished() {
                slot.delete = Delete::InFlight;
                out.push(Self::final_delete(&w.namespace, &w.name, &w.uid));
            }
        }
        for (uid, (ns, name, busy)) in &mut self.orphans {
            if !*busy {
                *busy = true;
                out.push(Self::final_delete(ns, name, uid));
            }
        }
        for (mut obj, ns, e) in pod_events {
            obj.field_path = e.field_path;
            self.push_event(obj, ns, e.type_, &e.reason, e.message, now);
        }
        for uid in secrets_done {
            self.finish_secrets(&uid, now);
        }
        let mut waiting = alloc::collections::VecDeque::new();
        while let Some(e) = self.events.pop_front() {
            if e.at > now {
                waiting.push_back(e);
                continue;
            }
            let ns = e.event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let id = self.event_seq;
            self.event_seq += 1;
            let request = if e.patch {
                let name = e.event.metadata.name.clone().unwrap_or_default();
                let body = json!({"count": e.event.count, "lastTimestamp": e.event.last_timestamp,
                                  "message": e.event.message});
                Outgoing {
                    op: Op::PatchEvent { id },
                    request: Request::with_body(
                        Method::Patch,
                        format!("/api/v1/namespaces/{ns}/events/{name}"),
                        CONTENT_SMP,
                        to_json(&body),
                    ),
                }
            } else {
                Outgoing {
                    op: Op::PostEvent { id },
                    request: Request::with_body(
                        Method::Post,
                        format!("/api/v1/namespaces/{ns}/events"),
                        CONTENT_JSON,
                        to_json(&e.event),
                    ),
                }
            };
            self.events_in_flight.insert(id, e);
            out.push(request);
        }
        self.events = waiting;
        out
    }

    fn final_delete(ns: &str, name: &str, uid: &str) -> Outgoing {
        let opts = DeleteOptions {
            api_version: "v1".into(),
            kind: "DeleteOptions".into(),
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.into()) }),
        };
        Outgoing {
            op: Op::DeletePod { uid: uid.into() },
            request: Request::with_body(
                Method::Delete,
                Self::pod_path(ns, name),
                CONTENT_JSON,
                to_json(&opts),
            ),
        }
    }

    /// Handles the reply to a request from [`Agent::tick`]: `Ok((status, body))`, or `Err(())`
    /// when the request could not be completed (transport or framing error).
    pub fn on_response(&mut self, op: Op, reply: Result<(u16, &[u8]), ()>, now: Time, rt: &mut dyn Runtime) {
        let (code, body) = match reply {
            Ok((c, b)) => (c, b),
            Err(()) => (0, &[][..]),
        };
        let ok = (200..300).contains(&code);
        match op {
            Op::RegisterNode | Op::GetNode => {
                self.reg_busy = false;
                if ok {
                    let node: Option<Node> = parse(body);
                    if let Some(uid) = node.and_then(|n| n.metadata.uid) {
                        self.node_uid = Some(uid);
                        self.reg = Reg::Done;
                        self.reg_backoff.reset();
                        self.status_at = now;
                        self.lease_at = now;
                        let name = self.cfg.name.clone();
                        if op == Op::RegisterNode {
                            self.node_event("Starting", String::from("Starting kubelet."), now);
                        }
                        for r in [
                            "NodeHasSufficientMemory",
                            "NodeHasNoDiskPressure",
                            "NodeHasSufficientPID",
                            "NodeReady",
                        ] {
                            self.node_event(r, format!("Node {name} status is now: {r}"), now);
                        }
                        return;
                    }
                }
                if op == Op::RegisterNode && code == 409 {
                    self.reg = Reg::Get;
                    self.reg_at = now;
                } else {
                    self.reg = Reg::Post;
                    self.reg_at = self.reg_backoff.fail(now);
                }
            }
            Op::GetNodeStatus => {
                self.status_busy = false;
                if ok {
                    // A Node that does not parse compares unequal and is patched.
                    self.status_server = Some(
                        parse::<Node>(body)
                            .and_then(|n| n.status)
                            .map(|st| Self::status_key(&st))
                            .unwrap_or_default(),
                    );
                } else if code == 404 {
                    self.reg = Reg::Post;
                    self.reg_at = now;
                    self.status_sent = None;
                } else {
                    self.status_at = now.plus_secs(1);
                }
            }
            Op::PatchNodeStatus => {
                self.status_busy = false;
                let key = self.status_sending.take();
                if ok {
                    self.status_sent = key.map(|k| (k, now));
                } else {
                    self.status_at = now.plus_secs(1);
                    if code == 404 {
                        // The Node was deleted behind our back: register again.
                        self.reg = Reg::Post;
                        self.reg_at = now;
                        self.status_sent = None;
                    }
                }
            }
            Op::GetLease | Op::CreateLease | Op::RenewLease => {
                self.lease_busy = false;
                let lease: Option<Value> =
                    if ok { parse::<Value>(body).filter(Value::is_object) } else { None };
                match (op, code, lease) {
                    (Op::GetLease, _, Some(l)) => {
                        self.lease = Some(l);
                        self.lease_step = LeaseStep::Renew;
                        self.lease_at = now;
                    }
                    (Op::GetLease, 404, _) => {
                        self.lease = None;
                        self.lease_step = LeaseStep::Create;
                        self.lease_at = now;
                    }
                    (Op::CreateLease | Op::RenewLease, _, Some(l)) => {
                        self.lease = Some(l);
                        self.lease_step = LeaseStep::Renew;
                        self.lease_conflicts = 0;
                        self.lease_backoff.reset();
                        self.lease_at = now.plus_secs(LEASE_RENEW_SECS);
                    }
                    (Op::RenewLease | Op::CreateLease, 409 | 404, _) => {
                        self.lease_step = LeaseStep::Get;
                        self.lease_conflicts += 1;
                        self.lease_at = if self.lease_conflicts > LEASE_MAX_CONFLICTS {
                            self.lease_conflicts = 0;
                            self.lease_backoff.fail(now)
                        } else {
                            now
                        };
                    }
                    _ => {
                        self.lease_step =
                            if self.lease.is_some() { LeaseStep::Renew } else { LeaseStep::Get };
                        self.lease_at = self.lease_backoff.fail(now);
                    }
                }
            }
            Op::ListPods => {
                let list: Option<PodList> = if ok { parse(body) } else { None };
                match list {
                    Some(list) => {
                        self.watch_backoff.reset();
                        self.last_rv = list.metadata.resource_version.clone().unwrap_or_default();
                        let seen: Vec<String> =
                            list.items.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                        for p in list.items {
                            self.upsert(p, now);
                        }
                        let gone: Vec<String> =
                            self.slots.keys().filter(|k| !seen.contains(k)).cloned().collect();
                        for uid in gone {
                            self.remove(&uid, now, rt);
                        }
                        self.source = Source::Watch(now);
                    }
                    None => {
                        if code == 410 {
                            self.list_rv = String::new();
                        }
                        self.source = Source::List(self.watch_backoff.fail(now));
                    }
                }
            }
            Op::WatchPods => self.on_watch_end(now, reply.map(|(c, _)| c)),
            Op::PatchPodStatus { uid } => {
                if let Some(slot) = self.slots.get_mut(&uid) {
                    let sent = slot.sending.take();
                    if ok {
                        slot.acked = sent;
                        slot.acked_rv = parse::<Pod>(body).and_then(|p| p.metadata.resource_version);
                    } else if code == 404 || code == 403 {
                        // Gone, or no longer bound to this node (the node authorizer says 403).
                        self.remove(&uid, now, rt);
                    }
                }
            }
            Op::DeletePod { uid } => {
                let gone = ok || code == 404 || code == 409 || code == 403;
                if let Some((_, _, busy)) = self.orphans.get_mut(&uid) {
                    if gone {
                        self.orphans.remove(&uid);
                    } else {
                        *busy = false;
                    }
                } else if gone {
                    self.remove(&uid, now, rt);
                } else if let Some(slot) = self.slots.get_mut(&uid) {
                    slot.delete = Delete::No;
                }
            }
            Op::GetSecret { uid, name } => {
                // A reply that is not a Secret with credentials counts as a secret not read.
                let answer = if ok && body.len() <= MAX_SECRET_RESPONSE_BYTES {
                    registry_auths(body).map_err(|_| ())
                } else {
                    Err(())
                };
                let round = self.slots.get_mut(&uid).and_then(|s| s.secrets.as_mut());
                if let Some(r) = round {
                    if let Some(i) = r.names.iter().position(|n| *n == name) {
                        if let Some(slot @ None) = r.answers.get_mut(i) {
                            *slot = Some(answer);
                        }
                    }
                }
                self.finish_secrets(&uid, now);
            }
            Op::PostEvent { id } | Op::PatchEvent { id } => {
                let Some(mut e) = self.events_in_flight.remove(&id) else { return };
                let patch = matches!(op, Op::PatchEvent { .. });
                if ok || (!patch && code == 409) {
                    // Delivered (a 409 on POST: an earlier try got through).
                } else if patch && code == 404 {
                    // The event to count on is gone: send it whole, with its count.
                    e.patch = false;
                    e.at = now;
                    self.queue_event(e);
                } else {
                    e.tries += 1;
                    if e.tries >= EVENT_MAX_TRIES {
                        self.dropped_events += 1;
                    } else {
                        e.at = now.plus_secs(10);
                        self.queue_event(e);
                    }
                }
            }
        }
    }

    fn upsert(&mut self, pod: Pod, now: Time) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if pod.spec.node_name.as_deref() != Some(self.cfg.name.as_str()) {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&uid) {
            // Someone else changed the status the node owns (the kubelet's status manager
            // reconciles the same way): send ours again, at most every 10 s.
            let foreign =
                pod.metadata.resource_version.is_some() && pod.metadata.resource_version != slot.acked_rv;
            let due = slot.reconciled_at.is_none_or(|t| now.millis_since(t) >= STATUS_UPDATE_SECS * 1000);
            if foreign && due && slot.sending.is_none() && slot.acked.is_some() {
                let server = pod.status.clone().unwrap_or_default();
                if kubelet_owned(&server) != kubelet_owned(&slot.worker.status()) {
                    slot.acked = None;
                    slot.reconciled_at = Some(now);
                }
            }
            slot.worker.pod = pod;
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Already finished (e.g. before a restart of the agent): nothing to run.
            if pod.metadata.deletion_timestamp.is_some() {
                let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let name = pod.metadata.name.clone().unwrap_or_default();
                self.orphans.entry(uid).or_insert((ns, name, false));
            }
            return;
        }
        let rejected = self.admit(&pod);
        let ip = format!("{}.{}", self.cfg.pod_net, self.next_ip % 254 + 1);
        self.next_ip = self.next_ip.wrapping_add(1);
        let worker = PodWorker::new(pod, self.cfg.internal_ip.clone(), ip, rejected.clone(), now);
        if let Some((reason, message)) = rejected {
            let obj = Self::pod_ref(&worker);
            let m = message.strip_prefix("Pod was rejected: ").unwrap_or(&message).to_string();
            self.push_event(obj, worker.namespace.clone(), "Warning", &reason, m, now);
        }
        self.slots.insert(
            uid,
            Slot {
                worker,
                acked: None,
                sending: None,
                acked_rv: None,
                reconciled_at: None,
                delete: Delete::No,
                secrets: None,
            },
        );
    }

    /// Admission by resources, as the kubelet's predicate admit handler does it: the sum
    /// of the requests of running pods plus this one must fit in allocatable.
    fn admit(&self, pod: &Pod) -> Option<(String, String)> {
        let active: Vec<&PodWorker> =
            self.slots.values().map(|s| &s.worker).filter(|w| !w.is_rejected() && !w.is_finished()).collect();
        let alloc = |r: &str, f: fn(&str) -> Result<u64, quantity::QuantityError>| {
            self.cfg.allocatable.get(r).and_then(|q| f(q).ok())
        };
        let want = pod_requests(pod);
        let used = active.iter().fold(crate::pods::PodRequests::default(), |mut acc, w| {
            let r = pod_requests(&w.pod);
            acc.cpu_millis = acc.cpu_millis.saturating_add(r.cpu_millis);
            acc.memory_bytes = acc.memory_bytes.saturating_add(r.memory_bytes);
            acc
        });
        let checks = [
            ("pods", 1, active.len() as u64, alloc("pods", quantity::bytes)),
            ("cpu", want.cpu_millis, used.cpu_millis, alloc("cpu", quantity::cpu_millis)),
            ("memory", want.memory_bytes, used.memory_bytes, alloc("memory", quantity::bytes)),
        ];
        for (res, req, used, cap) in checks {
            let Some(cap) = cap else { continue };
            if req > 0 && req.saturating_add(used) > cap {
                return Some((
                    format!("OutOf{res}"),
                    format!("Pod was rejected: Node didn't have enough resource: {res}, requested: {req}, used: {used}, capacity: {cap}"),
                ));
            }
        }
        None
    }

    fn remove(&mut self, uid: &str, now: Time, rt: &mut dyn Runtime) {
        if let Some(mut slot) = self.slots.remove(uid) {
            let mut evs = Vec::new();
            slot.worker.stop(rt, now, &mut evs);
        }
    }

    /// Feeds one line of the pod watch stream.
    pub fn on_watch_line(&mut self, line: &[u8], now: Time, rt: &mut dyn Runtime) {
        let Some(ev) = parse::<WatchEvent>(line) else { return };
        if let Some(rv) =
            ev.object.get("metadata").and_then(|m| m.get("resourceVersion")).and_then(Value::as_str)
        {
            if ev.type_ != "ERROR" {
                self.last_rv = rv.to_string();
            }
        }
        match ev.type_.as_str() {
            "ADDED" | "MODIFIED" => {
                if let Ok(pod) = serde_json::from_value::<Pod>(ev.object) {
                    self.upsert(pod, now);
                }
            }
            "DELETED" => {
                if let Some(uid) =
                    ev.object.get("metadata").and_then(|m| m.get("uid")).and_then(Value::as_str)
                {
                    let uid = uid.to_string();
                    self.remove(&uid, now, rt);
                    self.orphans.remove(&uid);
                }
            }
            "ERROR" => {
                let st: Option<Status> = serde_json::from_value(ev.object).ok();
                if st.and_then(|s| s.code) == Some(410) {
                    self.watch_expired = true;
                }
            }
            _ => {}
        }
    }

    /// The watch stream ended: `Ok(status)` when the server answered (200 = ended
    /// cleanly or after an ERROR event), `Err(())` on a transport failure.
    pub fn on_watch_end(&mut self, now: Time, status: Result<u16, ()>) {
        if self.source != Source::Busy {
            return;
        }
        let expired = core::mem::take(&mut self.watch_expired) || status == Ok(410);
        self.source = if expired {
            self.list_rv = String::new();
            Source::List(now)
        } else if status == Ok(200) {
            self.watch_backoff.reset();
            Source::Watch(now)
        } else {
            Source::Watch(self.watch_backoff.fail(now))
        };
    }
}
