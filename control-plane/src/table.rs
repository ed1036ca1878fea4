//! Server-side printing: `meta.k8s.io/v1` Tables for `Accept: application/json;as=Table;...`, with the
//! columns and cell texts kubectl shows against a real cluster (kubernetes `pkg/printers/internalversion`):
//!
//! - nodes: Name, Status, Roles, Age, Version; wide: Internal-IP, External-IP, OS-Image, Kernel-Version,
//!   Container-Runtime;
//! - pods: Name, Ready, Status, Restarts, Age; wide: IP, Node, Nominated Node, Readiness Gates;
//! - events: Last Seen, Type, Reason, Object, Message; wide: Subobject, Source, First Seen, Count, Name;
//! - leases: Name, Holder, Age; namespaces: Name, Status, Age; secrets: Name, Type, Data (the number of
//!   keys), Age; any other kind: Name, Age.
//!
//! Wide columns have priority 1 (kubectl prints them with `-o wide`). Each row carries the object as
//! `PartialObjectMetadata` (default), the full object, or nothing, per `?includeObject=`.
//! Ages use the apimachinery `HumanDuration` rules. Items are untrusted JSON: missing or mistyped
//! fields print as the apiserver prints zero values.

use crate::rfc3339;
use serde_json::{json, Map, Value};
use std::time::SystemTime;

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` with the item's metadata (the default).
    #[default]
    Metadata,
    /// The whole item.
    Object,
}

impl IncludeObject {
    /// Parses `?includeObject=` (`None`, `Metadata`, `Object`); absent or unknown means `Metadata`.
    pub fn from_query(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// A human-readable duration as kubectl prints ages (apimachinery `duration.HumanDuration`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = hours / 24 % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 timestamp at `now`; `<unknown>` when absent or unparseable.
fn since(ts: Option<&Value>, now: SystemTime) -> String {
    match ts.and_then(Value::as_str).and_then(rfc3339::parse) {
        Some((secs, _)) => human_duration(rfc3339::unix_seconds(now) - secs),
        None => "<unknown>".into(),
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.is_empty() {
        fallback
    } else {
        text
    }
}

fn items_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn column(name: &str, format: &str, description: &str, priority: u8) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column("Name", "name", "Name must be unique within a namespace.", 0)
}

fn age_column() -> Value {
    column("Age", "", "The time since the object was created.", 0)
}

fn columns(kind: &str) -> Vec<Value> {
    match kind {
        "Node" => vec![
            name_column(),
            column("Status", "", "The status of the node", 0),
            column("Roles", "", "The roles of the node", 0),
            age_column(),
            column("Version", "", "Kubelet Version reported by the node.", 0),
            column("Internal-IP", "", "The node's internal IP address.", 1),
            column("External-IP", "", "The node's external IP address.", 1),
            column("OS-Image", "", "OS image reported by the node.", 1),
            column("Kernel-Version", "", "Kernel version reported by the node.", 1),
            column("Container-Runtime", "", "Container runtime version reported by the node.", 1),
        ],
        "Pod" => vec![
            name_column(),
            column("Ready", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
            column("Status", "", "The aggregate status of the containers in this pod.", 0),
            column("Restarts", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            age_column(),
            column("IP", "", "The IP address allocated to the pod.", 1),
            column("Node", "", "The node the pod is bound to.", 1),
            column("Nominated Node", "", "The node the scheduler nominated for preemption.", 1),
            column("Readiness Gates", "", "True readiness gates out of all readiness gates.", 1),
        ],
        "Event" => vec![
            column("Last Seen", "", "The time the event was last recorded.", 0),
            column("Type", "", "Type of this event (Normal, Warning).", 0),
            column("Reason", "", "Short, machine-understandable reason for the event.", 0),
            column("Object", "", "The object this event is about.", 0),
            column("Subobject", "", "The part of the object this event is about.", 1),
            column("Source", "", "The component reporting this event.", 1),
            column("Message", "", "A human-readable description of the event.", 0),
            column("First Seen", "", "The time the event was first recorded.", 1),
            column("Count", "", "The number of times this event has occurred.", 1),
            column("Name", "name", "Name must be unique within a namespace.", 1),
        ],
        "Lease" => vec![name_column(), column("Holder", "", "The identity of the holder of the lease.", 0), age_column()],
        "Namespace" => {
            vec![name_column(), column("Status", "", "The status of the namespace", 0), age_column()]
        }
        "Secret" => vec![
            name_column(),
            column("Type", "", "How the secret's data is to be read (Opaque, kubernetes.io/dockerconfigjson, ...).", 0),
            column("Data", "", "The number of keys in the secret's data.", 0),
            age_column(),
        ],
        _ => vec![name_column(), age_column()],
    }
}

fn node_cells(n: &Value, now: SystemTime) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = items_at(n, "/status/conditions").iter().find(|c| s(c, "/type") == "Ready") {
        status.push(if s(c, "/status") == "True" { "Ready".into() } else { "NotReady".into() });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = n.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(role) = v.as_str().filter(|r| !r.is_empty()) {
                    roles.push(role.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        items_at(n, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(s(n, "/metadata/name")),
        json!(status.join(",")),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        json!(since(n.pointer("/metadata/creationTimestamp"), now)),
        json!(s(n, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or(s(n, "/status/nodeInfo/osImage"), "<unknown>")),
        json!(or(s(n, "/status/nodeInfo/kernelVersion"), "<unknown>")),
        json!(or(s(n, "/status/nodeInfo/containerRuntimeVersion"), "<unknown>")),
    ]
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn later(a: Option<i64>, b: Option<&Value>) -> Option<i64> {
    let t = b.and_then(Value::as_str).and_then(rfc3339::parse).map(|(s, _)| s);
    match (a, t) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn is_restartable_init(pod: &Value, name: &str) -> bool {
    items_at(pod, "/spec/initContainers")
        .iter()
        .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
}

/// The pod's Ready, Status and Restarts cells and the row conditions (kubectl `printPod`).
fn pod_cells(pod: &Value, now: SystemTime) -> (Vec<Value>, Option<Value>) {
    let phase = s(pod, "/status/phase");
    let mut reason = or(s(pod, "/status/reason"), phase).to_string();
    let conditions = items_at(pod, "/status/conditions");
    if conditions.iter().any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let init_specs = items_at(pod, "/spec/initContainers");
    let total = items_at(pod, "/spec/containers").len()
        + init_specs.iter().filter(|c| s(c, "/restartPolicy") == "Always").count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_restartable_restart: Option<i64> = None;

    let mut initializing = false;
    for (i, c) in items_at(pod, "/status/initContainerStatuses").iter().enumerate() {
        restarts += int(c, "/restartCount");
        last_restart = later(last_restart, c.pointer("/lastState/terminated/finishedAt"));
        let restartable = is_restartable_init(pod, s(c, "/name"));
        if restartable {
            restartable_restarts += int(c, "/restartCount");
            last_restartable_restart =
                later(last_restartable_restart, c.pointer("/lastState/terminated/finishedAt"));
        }
        let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if restartable && c.get("started").and_then(Value::as_bool) == Some(true) {
            if c.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match (s(t, "/reason"), int(t, "/signal")) {
                ("", 0) => format!("Init:ExitCode:{}", int(t, "/exitCode")),
                ("", sig) => format!("Init:Signal:{sig}"),
                (r, _) => format!("Init:{r}"),
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions.iter().any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in items_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            last_restart = later(last_restart, c.pointer("/lastState/terminated/finishedAt"));
            let waiting = s(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match (s(t, "/reason"), int(t, "/signal")) {
                    ("", 0) => format!("ExitCode:{}", int(t, "/exitCode")),
                    ("", sig) => format!("Signal:{sig}"),
                    (r, _) => r.to_string(),
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }

    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(rfc3339::unix_seconds(now) - t))
        }
        _ => restarts.to_string(),
    };

    let pod_ip = items_at(pod, "/status/podIPs").first().map(|p| s(p, "/ip")).unwrap_or("");
    let gates = items_at(pod, "/spec/readinessGates");
    let gates_text = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| s(c, "/type") == s(g, "/conditionType"))
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    let cells = vec![
        json!(s(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
        json!(since(pod.pointer("/metadata/creationTimestamp"), now)),
        json!(or(pod_ip, "<none>")),
        json!(or(s(pod, "/spec/nodeName"), "<none>")),
        json!(or(s(pod, "/status/nominatedNodeName"), "<none>")),
        json!(gates_text),
    ];
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };
    (cells, row_conditions)
}

fn event_cells(e: &Value, now: SystemTime) -> Vec<Value> {
    let has = |ptr: &str| e.pointer(ptr).and_then(Value::as_str).is_some_and(|t| rfc3339::parse(t).is_some());
    let first = if has("/firstTimestamp") {
        since(e.pointer("/firstTimestamp"), now)
    } else {
        since(e.pointer("/eventTime"), now)
    };
    let mut last =
        if has("/lastTimestamp") { since(e.pointer("/lastTimestamp"), now) } else { first.clone() };
    let mut count = int(e, "/count");
    if e.get("series").is_some_and(Value::is_object) {
        last = since(e.pointer("/series/lastObservedTime"), now);
        count = int(e, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(e, "/involvedObject/kind").to_lowercase();
    let target = match s(e, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = or(s(e, "/source/component"), s(e, "/reportingComponent"));
    let instance = or(s(e, "/source/host"), s(e, "/reportingInstance"));
    let source = match (component, instance) {
        ("", _) => "<unknown>".to_string(),
        (c, "") => c.to_string(),
        (c, i) => format!("{c}, {i}"),
    };
    vec![
        json!(last),
        json!(s(e, "/type")),
        json!(s(e, "/reason")),
        json!(target),
        json!(s(e, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(e, "/message").trim()),
        json!(first),
        json!(count),
        json!(s(e, "/metadata/name")),
    ]
}

fn row_object(kind: &str, item: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => {
            let mut full = item.clone();
            if let Some(m) = full.as_object_mut() {
                m.entry("kind").or_insert_with(|| json!(kind));
                m.entry("apiVersion").or_insert_with(|| json!(api_version(kind)));
            }
            Some(full)
        }
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Lease" => "coordination.k8s.io/v1",
        _ => "v1",
    }
}

/// The Table of `items` of `kind` at `now`, each row with `PartialObjectMetadata`.
/// The caller sets `metadata.resourceVersion` (and `continue`) of the list.
pub fn to_table(kind: &str, items: &[Value], now: SystemTime) -> Value {
    to_table_with(kind, items, now, IncludeObject::Metadata)
}

/// [`to_table`] with the row object chosen by `include`.
pub fn to_table_with(kind: &str, items: &[Value], now: SystemTime, include: IncludeObject) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let (cells, conditions) = match kind {
                "Node" => (node_cells(item, now), None),
                "Pod" => pod_cells(item, now),
                "Event" => (event_cells(item, now), None),
                "Lease" => (
                    vec![
                        json!(s(item, "/metadata/name")),
                        json!(s(item, "/spec/holderIdentity")),
                        json!(since(item.pointer("/metadata/creationTimestamp"), now)),
                    ],
                    None,
                ),
                "Secret" => (
                    vec![
                        json!(s(item, "/metadata/name")),
                        json!(s(item, "/type")),
                        json!(item.get("data").and_then(Value::as_object).map_or(0, Map::len)),
                        json!(since(item.pointer("/metadata/creationTimestamp"), now)),
                    ],
                    None,
                ),
                "Namespace" => (
                    vec![
                        json!(s(item, "/metadata/name")),
                        json!(s(item, "/status/phase")),
                        json!(since(item.pointer("/metadata/creationTimestamp"), now)),
                    ],
                    None,
                ),
                _ => (
                    vec![
                        json!(s(item, "/metadata/name")),
                        json!(since(item.pointer("/metadata/creationTimestamp"), now)),
                    ],
                    None,
                ),
            };
            let mut row = Map::new();
            row.insert("cells".into(), json!(cells));
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            if let Some(o) = row_object(kind, item, include) {
                row.insert("object".into(), o);
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc3339::system_time;

    const T0: i64 = 1_733_911_200; // 2024-12-11T10:00:00Z

    fn at(offset_s: i64) -> SystemTime {
        system_time(T0 + offset_s)
    }

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (599, "9m59s"),
            (600, "10m"),
            (10_799, "179m"),
            (10_800, "3h"),
            (11_100, "3h5m"),
            (28_800, "8h"),
            (172_799, "47h"),
            (172_800, "2d"),
            (180_000, "2d2h"),
            (691_200, "8d"),
            (63_072_000, "2y"),
            (63_158_400, "2y1d"),
            (252_288_000, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    fn node() -> Value {
        json!({"metadata": {"name": "n1", "creationTimestamp": "2024-12-11T10:00:00Z", "uid": "u",
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/hostname": "n1"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "lite://0.1.0"}}})
    }

    #[test]
    fn node_rows() {
        let t = to_table("Node", &[node(), json!({"metadata": {"name": "bare"}})], at(300));
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        let wide: Vec<u64> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["priority"].as_u64().unwrap())
            .collect();
        assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,worker",
                "5m",
                "v1.32.0",
                "10.0.0.2",
                "<none>",
                "Debian GNU/Linux 12",
                "6.1.0",
                "lite://0.1.0"
            ])
        );
        assert_eq!(
            t["rows"][1]["cells"],
            json!([
                "bare",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
        let mut unknown = node();
        unknown["status"]["conditions"][1]["status"] = json!("Unknown");
        unknown["spec"] = json!({});
        assert_eq!(to_table("Node", &[unknown], at(0))["rows"][0]["cells"][1], "NotReady");
    }

    fn pod(status: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2024-12-11T10:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"}, "status": status})
    }

    fn cells(p: Value, now: SystemTime) -> Value {
        to_table("Pod", &[p], now)["rows"][0]["cells"].clone()
    }

    #[test]
    fn pod_rows() {
        let pending = pod(json!({"phase": "Pending"}));
        assert_eq!(
            cells(pending, at(30)),
            json!(["web", "0/2", "Pending", "0", "30s", "<none>", "n1", "<none>", "<none>"])
        );

        let running = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.88.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-12-11T10:55:00Z"}}},
                {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(
            cells(running, at(3600)),
            json!(["web", "2/2", "Running", "2 (5m ago)", "60m", "10.88.0.5", "n1", "<none>", "<none>"])
        );

        let crash = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
        assert_eq!(
            cells(crash, at(60)).as_array().unwrap()[1..4],
            json!(["1/2", "CrashLoopBackOff", "3"]).as_array().unwrap()[..]
        );

        let done = pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        let t = to_table("Pod", &[done], at(60));
        assert_eq!(t["rows"][0]["cells"][2], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");

        let failed = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]}));
        assert_eq!(cells(failed, at(60))[2], "ExitCode:2");

        let mut deleting = pod(json!({"phase": "Running"}));
        deleting["metadata"]["deletionTimestamp"] = json!("2024-12-11T10:01:00Z");
        assert_eq!(cells(deleting, at(60))[2], "Terminating");

        let mut init = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}));
        init["spec"]["initContainers"] = json!([{"name": "i"}]);
        assert_eq!(cells(init, at(5))[2], "Init:0/1");

        let mut gated =
            pod(json!({"phase": "Running", "conditions": [{"type": "example.com/gate", "status": "True"}]}));
        gated["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
        assert_eq!(cells(gated, at(5))[8], "1/2");
    }

    #[test]
    fn event_rows() {
        let e = json!({"metadata": {"name": "n1.17f0a", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n1", "fieldPath": ""},
            "reason": "NodeReady", "message": "Node n1 status is now: NodeReady\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-12-11T10:00:00Z", "lastTimestamp": "2024-12-11T10:04:00Z", "count": 3});
        let t = to_table("Event", &[e], at(300));
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "60s",
                "Normal",
                "NodeReady",
                "node/n1",
                "",
                "kubelet, n1",
                "Node n1 status is now: NodeReady",
                "5m",
                3,
                "n1.17f0a"
            ])
        );
        let bare = json!({"involvedObject": {"kind": "Pod"}, "eventTime": "2024-12-11T10:00:00.000000Z", "reportingComponent": "x"});
        let row = &to_table("Event", &[bare], at(10))["rows"][0]["cells"];
        assert_eq!(row[0], "10s");
        assert_eq!(row[3], "pod");
        assert_eq!(row[5], "x");
        assert_eq!(row[8], 1);
    }

    #[test]
    fn lease_namespace_and_fallback_rows_and_include_object() {
        let lease = json!({"metadata": {"name": "n1", "creationTimestamp": "2024-12-11T10:00:00Z"}, "spec": {"holderIdentity": "n1"}});
        let t = to_table_with("Lease", std::slice::from_ref(&lease), at(7200), IncludeObject::Object);
        assert_eq!(t["rows"][0]["cells"], json!(["n1", "n1", "120m"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "Lease");
        assert_eq!(t["rows"][0]["object"]["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(t["rows"][0]["object"]["spec"]["holderIdentity"], "n1");
        let t = to_table_with("Lease", &[lease], at(0), IncludeObject::from_query(Some("None")));
        assert!(t["rows"][0].get("object").is_none());
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-12-11T10:00:00Z"}, "status": {"phase": "Active"}});
        assert_eq!(
            to_table("Namespace", std::slice::from_ref(&ns), at(90_000))["rows"][0]["cells"],
            json!(["default", "Active", "25h"])
        );
        let secret = json!({"metadata": {"name": "regcred", "creationTimestamp": "2024-12-11T10:00:00Z"},
                            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}});
        let t = to_table("Secret", &[secret, json!({"metadata": {"name": "empty"}, "data": "odd"})], at(65));
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Type", "Data", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["regcred", "kubernetes.io/dockerconfigjson", 1, "65s"]));
        assert_eq!(t["rows"][1]["cells"], json!(["empty", "", 0, "<unknown>"]));
        let t = to_table("Widget", &[ns], at(0));
        assert_eq!(t["rows"][0]["cells"], json!(["default", "0s"]));
        assert_eq!(IncludeObject::from_query(None), IncludeObject::Metadata);
        assert_eq!(IncludeObject::from_query(Some("Object")), IncludeObject::Object);
    }

    /// Every field path the printers read exists in the official v1.32 schemas (so a renamed or
    /// misspelled field cannot silently print as empty).
    #[test]
    fn printed_fields_exist_in_official_schema() {
        let mut schemas = serde_json::Map::new();
        for f in ["api__v1_openapi.json", "apis__coordination.k8s.io__v1_openapi.json"] {
            let Some(doc) = crate::openapi::official(f) else { return };
            schemas.extend(doc["components"]["schemas"].as_object().cloned().unwrap_or_default());
        }
        fn resolve<'a>(schemas: &'a serde_json::Map<String, Value>, v: &'a Value) -> &'a Value {
            let r = v.get("$ref").or_else(|| v.pointer("/allOf/0/$ref")).and_then(Value::as_str);
            match r {
                Some(r) => &schemas[r.rsplit('/').next().unwrap_or(r)],
                None => v,
            }
        }
        let paths = [
            ("io.k8s.api.core.v1.Node", "metadata.creationTimestamp metadata.labels spec.unschedulable status.conditions.type status.conditions.status status.addresses.type status.addresses.address status.nodeInfo.kubeletVersion status.nodeInfo.osImage status.nodeInfo.kernelVersion status.nodeInfo.containerRuntimeVersion"),
            ("io.k8s.api.core.v1.Pod", "metadata.deletionTimestamp status.phase status.reason status.conditions.reason status.podIPs.ip status.nominatedNodeName spec.nodeName spec.readinessGates.conditionType spec.initContainers.restartPolicy status.initContainerStatuses.started status.containerStatuses.ready status.containerStatuses.restartCount status.containerStatuses.lastState.terminated.finishedAt status.containerStatuses.state.waiting.reason status.containerStatuses.state.terminated.signal status.containerStatuses.state.terminated.exitCode status.containerStatuses.state.running"),
            ("io.k8s.api.core.v1.Event", "firstTimestamp lastTimestamp eventTime count series.count series.lastObservedTime involvedObject.kind involvedObject.name involvedObject.fieldPath source.component source.host reportingComponent reportingInstance message reason type"),
            ("io.k8s.api.core.v1.Namespace", "status.phase"),
            ("io.k8s.api.coordination.v1.Lease", "spec.holderIdentity"),
            ("io.k8s.api.core.v1.Secret", "type data"),
        ];
        for (root, list) in paths {
            for path in list.split(' ') {
                let mut cur = &schemas[root];
                for seg in path.split('.') {
                    let next = cur.pointer(&format!("/properties/{seg}"));
                    let next = next.unwrap_or_else(|| panic!("{root}: {path} not in the official schema"));
                    let next = match next.get("items") {
                        Some(items) => items,
                        None => next,
                    };
                    cur = resolve(&schemas, next);
                }
            }
        }
    }
}
