//! The in-process controllers (the namespace controller lives beside the API it drives, in
//! `Api::namespace_controller_once`): the scheduler and the node lifecycle controller.
//!
//! The scheduler binds pods without `spec.nodeName` to a Ready node. It filters nodes as
//! kube-scheduler's default plugins do, in their order: `spec.unschedulable` (unless the pod
//! tolerates the `node.kubernetes.io/unschedulable:NoSchedule` taint), `NoSchedule` and
//! `NoExecute` taints the pod's tolerations do not tolerate, `spec.nodeSelector` and the
//! required node affinity (`matchExpressions`, `matchFields` on `metadata.name`), then pod
//! count, cpu and memory. Of the nodes left it picks the one with the fewest untolerated
//! `PreferNoSchedule` taints, then the fewest pods. A pod no node takes stays Pending with
//! `PodScheduled=False`, reason `Unschedulable`, and a `FailedScheduling` event, both with the
//! message kube-scheduler writes (`0/2 nodes are available: 1 node(s) didn't match Pod's node
//! affinity/selector, 1 node(s) had untolerated taint {k: v}.`).
//!
//! The node lifecycle controller sets the conditions of a node whose lease and status have not
//! been renewed within the grace period to `Unknown`. As in kube-controller-manager, the grace
//! period runs from when the controller last *saw* a renewal, not from the timestamps the node
//! wrote: a control plane that was down for a while gives every node a fresh grace period
//! when it comes back instead of declaring them all lost at once.
//!
//! Both are plain functions of the store and a time passed in, run in a loop by [`spawn`].

use crate::json::{self, NotAnObject};
use crate::rfc3339;
use crate::store::{Key, Store, StoreError};
use crate::validate::parse_quantity;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long a node may go without renewing its lease or status before it is `Unknown`
/// (kube-controller-manager `--node-monitor-grace-period` default since 1.32).
pub const NODE_GRACE: Duration = Duration::from_secs(50);

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// Sets (or adds) a condition; `lastTransitionTime` changes only when the status flips. An
/// object whose `status` is not an object is left alone with an error.
fn set_condition(obj: &mut Value, cond: Value, now: &str) -> Result<(), NotAnObject> {
    if !obj.get("status").is_some_and(Value::is_object) {
        json::set(obj, "status", json!({}))?;
    }
    if !obj.pointer("/status/conditions").is_some_and(Value::is_array) {
        json::set_at(obj, &["status", "conditions"], json!([]))?;
    }
    let Some(list) = obj.pointer_mut("/status/conditions").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    let ty = cond.get("type").cloned();
    let mut cond = cond;
    match list.iter_mut().find(|c| c.get("type") == ty.as_ref()) {
        Some(old) => {
            let flipped = old.get("status") != cond.get("status");
            let at = if flipped {
                json!(now)
            } else {
                old.get("lastTransitionTime").cloned().unwrap_or(json!(now))
            };
            json::set(&mut cond, "lastTransitionTime", at)?;
            *old = cond;
        }
        None => {
            json::set(&mut cond, "lastTransitionTime", json!(now))?;
            list.push(cond);
        }
    }
    Ok(())
}

/// A controller's write that did not happen: the store refused it, or the stored object is not
/// shaped as its kind (a member that must be an object is not one). The next pass tries again.
struct NotWritten;

impl From<StoreError> for NotWritten {
    fn from(_: StoreError) -> Self {
        NotWritten
    }
}

impl From<NotAnObject> for NotWritten {
    fn from(_: NotAnObject) -> Self {
        NotWritten
    }
}

fn node_ready(node: &Value) -> bool {
    condition(node, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

/// The taint kube-scheduler's NodeUnschedulable filter asks a pod to tolerate on a node with
/// `spec.unschedulable`.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

fn list<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Whether one toleration tolerates a taint (`v1.Toleration.ToleratesTaint`): an empty effect
/// matches every effect, an empty key with `Exists` every key; `Equal` (or no operator) also
/// needs the same value.
fn tolerates(toleration: &Value, key: &str, value: &str, effect: &str) -> bool {
    let t_effect = str_of(toleration, "effect");
    let t_key = str_of(toleration, "key");
    if (!t_effect.is_empty() && t_effect != effect) || (!t_key.is_empty() && t_key != key) {
        return false;
    }
    match str_of(toleration, "operator") {
        "" | "Equal" => str_of(toleration, "value") == value,
        "Exists" => true,
        _ => false,
    }
}

fn pod_tolerates(pod: &Value, key: &str, value: &str, effect: &str) -> bool {
    list(pod, "/spec/tolerations").iter().any(|t| tolerates(t, key, value, effect))
}

/// The node's taints with `effect` the pod does not tolerate.
fn untolerated<'a>(node: &'a Value, pod: &Value, effects: &[&str]) -> Vec<&'a Value> {
    list(node, "/spec/taints")
        .iter()
        .filter(|t| effects.contains(&str_of(t, "effect")))
        .filter(|t| !pod_tolerates(pod, str_of(t, "key"), str_of(t, "value"), str_of(t, "effect")))
        .collect()
}

/// Whether a node selector requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`)
/// holds for a value that may be absent.
fn requirement_holds(req: &Value, actual: Option<&str>) -> bool {
    let values: Vec<&str> = list(req, "/values").iter().filter_map(Value::as_str).collect();
    let number = |s: &str| s.parse::<i64>().ok();
    match str_of(req, "operator") {
        "In" => actual.is_some_and(|a| values.contains(&a)),
        "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
        "Exists" => actual.is_some(),
        "DoesNotExist" => actual.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), [limit]) = (actual.and_then(number), values.as_slice()) else { return false };
            let Some(limit) = number(limit) else { return false };
            if str_of(req, "operator") == "Gt" {
                a > limit
            } else {
                a < limit
            }
        }
        _ => false,
    }
}

/// Whether the pod's `spec.nodeSelector` (every label equal) and its required node affinity
/// (any term whose expressions and fields all hold) let it onto the node.
fn selector_matches(node: &Value, pod: &Value) -> bool {
    let label = |k: &str| node.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
    let selected = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| sel.iter().all(|(k, v)| v.as_str().is_some_and(|v| label(k) == Some(v))));
    if !selected {
        return false;
    }
    let Some(required) =
        pod.pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
    else {
        return true;
    };
    let terms = list(required, "/nodeSelectorTerms");
    // A term without requirements selects nothing; no term at all selects nothing either.
    terms.iter().any(|term| {
        let exprs = list(term, "/matchExpressions");
        let fields = list(term, "/matchFields");
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|r| requirement_holds(r, label(str_of(r, "key"))))
            && fields.iter().all(|r| {
                str_of(r, "key") == "metadata.name"
                    && requirement_holds(r, node.pointer("/metadata/name").and_then(Value::as_str))
            })
    })
}

fn terminal(pod: &Value) -> bool {
    matches!(s(pod, "/status/phase"), Some("Succeeded" | "Failed"))
}

/// The sum of container requests of `resource` (nano-units).
fn pod_request(pod: &Value, resource: &str) -> i128 {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.pointer(&format!("/resources/requests/{resource}")).and_then(Value::as_str))
                .filter_map(parse_quantity)
                .sum()
        })
        .unwrap_or(0)
}

fn allocatable(node: &Value, resource: &str) -> Option<i128> {
    s(node, &format!("/status/allocatable/{resource}"))
        .or_else(|| s(node, &format!("/status/capacity/{resource}")))
        .and_then(parse_quantity)
}

/// Why a node cannot take a pod, or `None` when it can: the reason of the first of
/// kube-scheduler's filters that fails, in its order (readiness stands in for the not-ready
/// taint the node lifecycle controller would set).
fn misfit(node: &Value, pod: &Value, bound: &[&Value]) -> Option<String> {
    if !node_ready(node) {
        return Some("node(s) were not ready".into());
    }
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false)
        && !pod_tolerates(pod, UNSCHEDULABLE_TAINT, "", "NoSchedule")
    {
        return Some("node(s) were unschedulable".into());
    }
    if let Some(t) = untolerated(node, pod, &["NoSchedule", "NoExecute"]).first() {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            str_of(t, "key"),
            str_of(t, "value")
        ));
    }
    if !selector_matches(node, pod) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    let one = 1_000_000_000i128;
    if allocatable(node, "pods").is_some_and(|max| (bound.len() as i128 + 1) * one > max) {
        return Some("Too many pods".into());
    }
    for (res, why) in [("cpu", "Insufficient cpu"), ("memory", "Insufficient memory")] {
        let used: i128 = bound.iter().map(|p| pod_request(p, res)).sum();
        if allocatable(node, res).is_some_and(|a| used + pod_request(pod, res) > a) {
            return Some(why.into());
        }
    }
    None
}

/// One scheduling pass; returns how many pods were bound.
pub fn schedule_once(store: &Store, now: SystemTime) -> usize {
    let now_s = rfc3339::format_time(rfc3339::unix_seconds(now));
    let (nodes, _) = store.list("nodes", None);
    let (pods, _) = store.list("pods", None);
    let mut per_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in pods.iter().filter(|p| !terminal(p)) {
        if let Some(n) = s(p, "/spec/nodeName").filter(|n| !n.is_empty()) {
            per_node.entry(n.to_string()).or_default().push(p.clone());
        }
    }
    let mut bound = 0;
    for pod in &pods {
        let unbound = s(pod, "/spec/nodeName").is_none_or(str::is_empty);
        let ours = s(pod, "/spec/schedulerName").is_none_or(|n| n == "default-scheduler");
        if !unbound || !ours || terminal(pod) || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let (Some(ns), Some(name)) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name")) else {
            continue;
        };
        let key = Key::new("pods", ns, name);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        // The best node has the fewest PreferNoSchedule taints the pod does not tolerate, then
        // the fewest pods.
        let mut best: Option<(&Value, (usize, usize))> = None;
        for node in &nodes {
            let Some(nname) = s(node, "/metadata/name") else { continue };
            let on: Vec<&Value> = per_node.get(nname).map(|v| v.iter().collect()).unwrap_or_default();
            match misfit(node, pod, &on) {
                Some(why) => *reasons.entry(why).or_default() += 1,
                None => {
                    let score = (untolerated(node, pod, &["PreferNoSchedule"]).len(), on.len());
                    if best.is_none_or(|(_, b)| score < b) {
                        best = Some((node, score));
                    }
                }
            }
        }
        if let Some((node, _)) = best {
            let Some(nname) = s(node, "/metadata/name") else { continue };
            let res = store.modify::<NotWritten>(&key, |cur| {
                if s(cur, "/spec/nodeName").is_some_and(|n| !n.is_empty()) {
                    return Ok(None);
                }
                let mut new = cur.clone();
                json::set_at(&mut new, &["spec", "nodeName"], json!(nname))?;
                set_condition(
                    &mut new,
                    json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null}),
                    &now_s,
                )?;
                Ok(Some(new))
            });
            if let Ok(p) = res {
                per_node.entry(nname.to_string()).or_default().push(p);
                bound += 1;
                event(
                    store,
                    pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {nname}"),
                    &now_s,
                );
            }
        } else {
            // kube-scheduler's FitError sorts the "count reason" strings.
            let mut detail: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
            detail.sort();
            let message = if nodes.is_empty() {
                "no nodes available to schedule pods".to_string()
            } else {
                format!("0/{} nodes are available: {}.", nodes.len(), detail.join(", "))
            };
            let already = condition(pod, "PodScheduled").is_some_and(|c| {
                c.get("status") == Some(&json!("False")) && c.get("message") == Some(&json!(message))
            });
            if already {
                continue;
            }
            let res = store.modify::<NotWritten>(&key, |cur| {
                let mut new = cur.clone();
                set_condition(
                    &mut new,
                    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": message, "lastProbeTime": null}),
                    &now_s,
                )?;
                Ok(Some(new))
            });
            if res.is_ok() {
                event(store, pod, "Warning", "FailedScheduling", &message, &now_s);
            }
        }
    }
    bound
}

fn event(store: &Store, pod: &Value, ty: &str, reason: &str, message: &str, now: &str) {
    let (Some(ns), Some(name)) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name")) else { return };
    let ev_name = format!("{name}.{:x}", uuid::Uuid::new_v4().as_u128() >> 64);
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": ev_name, "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod.pointer("/metadata/uid"),
                           "apiVersion": "v1", "resourceVersion": pod.pointer("/metadata/resourceVersion")},
        "reason": reason, "message": message, "type": ty, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler",
        "reportingInstance": "default-scheduler",
    });
    let _ = store.create(Key::new("events", ns, &ev_name), ev);
}

/// The last sign of life of a node: its lease's renewTime or its Ready heartbeat, whichever is later.
fn last_seen(store: &Store, node: &Value) -> Option<i64> {
    let name = s(node, "/metadata/name")?;
    let lease = store.get(&Key::new("leases.coordination.k8s.io", "kube-node-lease", name));
    let renew = lease.as_ref().and_then(|l| s(l, "/spec/renewTime")).and_then(rfc3339::parse).map(|(t, _)| t);
    let beat = condition(node, "Ready")
        .and_then(|c| c.get("lastHeartbeatTime")?.as_str())
        .and_then(rfc3339::parse)
        .map(|(t, _)| t);
    let created = s(node, "/metadata/creationTimestamp").and_then(rfc3339::parse).map(|(t, _)| t);
    [renew, beat, created].into_iter().flatten().max()
}

/// The node lifecycle controller: what it last saw of each node and when.
#[derive(Debug, Default)]
pub struct NodeLifecycle {
    /// Node name to (its last sign of life as written by the node, when that value was first seen).
    seen: BTreeMap<String, (Option<i64>, i64)>,
}

impl NodeLifecycle {
    /// A controller that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One pass; returns how many nodes were marked Unknown.
    pub fn run_once(&mut self, store: &Store, now: SystemTime) -> usize {
        let now_unix = rfc3339::unix_seconds(now);
        let now_s = rfc3339::format_time(now_unix);
        let grace = i64::try_from(NODE_GRACE.as_secs()).unwrap_or(50);
        let (nodes, _) = store.list("nodes", None);
        self.seen.retain(|name, _| nodes.iter().any(|n| s(n, "/metadata/name") == Some(name.as_str())));
        let mut marked = 0;
        for node in nodes {
            let Some(name) = s(&node, "/metadata/name") else { continue };
            let signal = last_seen(store, &node);
            let observed = match self.seen.get(name) {
                Some((last, at)) if *last == signal => *at,
                _ => {
                    self.seen.insert(name.to_string(), (signal, now_unix));
                    now_unix
                }
            };
            let ready = condition(&node, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str);
            if ready.is_none() || ready == Some("Unknown") || now_unix - observed <= grace {
                continue;
            }
            let res = store.modify::<NotWritten>(&Key::new("nodes", "", name), |cur| {
                let mut new = cur.clone();
                let types: Vec<Value> = cur
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(|c| c.get("type").cloned()).collect())
                    .unwrap_or_default();
                for ty in types {
                    let beat = condition(cur, ty.as_str().unwrap_or(""))
                        .and_then(|c| c.get("lastHeartbeatTime").cloned());
                    set_condition(
                        &mut new,
                        json!({"type": ty, "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": beat}),
                        &now_s,
                    )?;
                }
                Ok(Some(new))
            });
            if res.is_ok() {
                marked += 1;
            }
        }
        marked
    }
}

/// Runs both controllers on a thread: after every change and at least every second.
pub fn spawn(api: Arc<crate::api::Api>) {
    let _ = std::thread::Builder::new().name("controllers".into()).spawn(move || {
        let mut seen = 0;
        let mut lifecycle = NodeLifecycle::new();
        loop {
            let now = SystemTime::now();
            schedule_once(&api.store, now);
            lifecycle.run_once(&api.store, now);
            api.namespace_controller_once();
            // Our own writes move the version too; the next pass finds nothing to do.
            seen = api.store.wait_past(seen.max(api.store.rv()), Duration::from_secs(1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, pods: &str, cpu: &str, beat: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": beat},
               "status": {"allocatable": {"pods": pods, "cpu": cpu, "memory": "1Gi"},
                          "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}})
    }

    fn pod(name: &str, cpu: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": name},
                           "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        if let Some(c) = cpu {
            p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": c}});
        }
        p
    }

    const T0: &str = "2024-12-11T10:00:00Z";

    fn t0() -> SystemTime {
        rfc3339::system_time(rfc3339::parse(T0).unwrap().0)
    }

    #[test]
    fn conditions_on_misshapen_objects_are_errors_not_panics() {
        let cond = || json!({"type": "Ready", "status": "Unknown"});
        for bad in [json!([1]), json!("text"), json!({"status": []}), json!({"status": {"conditions": 5}})] {
            let mut v = bad.clone();
            let r = set_condition(&mut v, cond(), T0);
            // A `conditions` that is not a list is replaced, as before; anything else is refused.
            if bad.pointer("/status/conditions").is_some() {
                assert_eq!(r, Ok(()));
                assert_eq!(v.pointer("/status/conditions/0/lastTransitionTime"), Some(&json!(T0)));
            } else if bad.get("status").is_some() {
                assert_eq!(r, Ok(()), "a status that is not an object is replaced");
            } else {
                assert!(r.is_err(), "{bad}");
                assert_eq!(v, bad);
            }
        }
        let mut ok = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t"}]}});
        set_condition(&mut ok, json!({"type": "Ready", "status": "True"}), T0).unwrap();
        assert_eq!(ok.pointer("/status/conditions/0/lastTransitionTime"), Some(&json!("t")));
    }

    #[test]
    fn pods_go_to_ready_nodes_with_room() {
        let st = Store::in_memory();
        st.create(Key::new("nodes", "", "down"), node("down", "False", "110", "4", T0)).unwrap();
        st.create(Key::new("nodes", "", "n1"), node("n1", "True", "110", "1", T0)).unwrap();
        st.create(Key::new("pods", "default", "a"), pod("a", Some("500m"))).unwrap();
        st.create(Key::new("pods", "default", "b"), pod("b", Some("800m"))).unwrap();
        assert_eq!(schedule_once(&st, t0()), 1);
        let a = st.get(&Key::new("pods", "default", "a")).unwrap();
        assert_eq!(a["spec"]["nodeName"], "n1");
        assert_eq!(condition(&a, "PodScheduled").unwrap()["status"], "True");
        let b = st.get(&Key::new("pods", "default", "b")).unwrap();
        assert!(b["spec"].get("nodeName").is_none());
        let c = condition(&b, "PodScheduled").unwrap();
        assert_eq!(c["status"], "False");
        assert_eq!(c["message"], "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready.");
        let (events, _) = st.list("events", Some("default"));
        assert!(events
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "b"));
        // A second pass with nothing new writes nothing.
        let rv = st.rv();
        assert_eq!(schedule_once(&st, t0()), 0);
        assert_eq!(st.rv(), rv);
    }

    fn ready(name: &str, labels: Value, spec: Value) -> Value {
        let mut n = node(name, "True", "110", "4", T0);
        n["metadata"]["labels"] = labels;
        n["spec"] = spec;
        n
    }

    fn scheduled_to(st: &Store, name: &str) -> Option<String> {
        let p = st.get(&Key::new("pods", "default", name)).unwrap();
        p.pointer("/spec/nodeName").and_then(Value::as_str).map(String::from)
    }

    /// Issue 13 finding 7: taints, tolerations, nodeSelector and unschedulable nodes.
    #[test]
    fn taints_tolerations_and_selectors_decide_where_pods_go() {
        let st = Store::in_memory();
        let taint = json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
        st.create(Key::new("nodes", "", "a"), ready("a", json!({"disktype": "ssd"}), taint)).unwrap();
        st.create(Key::new("nodes", "", "b"), ready("b", json!({}), json!({}))).unwrap();
        let mut p = pod("p", None);
        p["spec"]["nodeSelector"] = json!({"disktype": "ssd"});
        st.create(Key::new("pods", "default", "p"), p.clone()).unwrap();
        assert_eq!(schedule_once(&st, t0()), 0);
        let stored = st.get(&Key::new("pods", "default", "p")).unwrap();
        let c = condition(&stored, "PodScheduled").unwrap();
        assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("Unschedulable")));
        let message = "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: db}.";
        assert_eq!(c["message"], message);
        let (events, _) = st.list("events", Some("default"));
        assert!(events
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["message"] == message && e["type"] == "Warning"));
        // With the toleration the pod goes to the tainted, labelled node.
        st.modify::<StoreError>(&Key::new("pods", "default", "p"), |cur| {
            let mut new = cur.clone();
            new["spec"]["tolerations"] =
                json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
            Ok(Some(new))
        })
        .unwrap();
        assert_eq!(schedule_once(&st, t0()), 1);
        assert_eq!(scheduled_to(&st, "p").as_deref(), Some("a"));
        // An unschedulable node takes only pods that tolerate it; `Exists` with no key tolerates all.
        st.modify::<StoreError>(&Key::new("nodes", "", "b"), |cur| {
            let mut new = cur.clone();
            new["spec"]["unschedulable"] = json!(true);
            Ok(Some(new))
        })
        .unwrap();
        st.create(Key::new("pods", "default", "q"), pod("q", None)).unwrap();
        assert_eq!(schedule_once(&st, t0()), 0);
        let q = st.get(&Key::new("pods", "default", "q")).unwrap();
        assert_eq!(
            condition(&q, "PodScheduled").unwrap()["message"],
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were unschedulable."
        );
        let mut r = pod("r", None);
        r["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        r["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}});
        st.create(Key::new("pods", "default", "r"), r).unwrap();
        assert_eq!(schedule_once(&st, t0()), 1);
        assert_eq!(scheduled_to(&st, "r").as_deref(), Some("b"));
    }

    #[test]
    fn prefer_no_schedule_is_a_preference() {
        let st = Store::in_memory();
        let soft = json!({"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]});
        st.create(Key::new("nodes", "", "a"), ready("a", json!({}), soft)).unwrap();
        st.create(Key::new("nodes", "", "b"), ready("b", json!({}), json!({}))).unwrap();
        let mut busy = pod("busy", None);
        busy["spec"]["nodeName"] = json!("b");
        st.create(Key::new("pods", "default", "busy"), busy).unwrap();
        st.create(Key::new("pods", "default", "p"), pod("p", None)).unwrap();
        assert_eq!(schedule_once(&st, t0()), 1);
        assert_eq!(scheduled_to(&st, "p").as_deref(), Some("b"), "the busier node without the soft taint");
        // Alone with the soft taint, the node still takes pods.
        st.delete::<StoreError>(&Key::new("nodes", "", "b"), |_| Ok(())).unwrap();
        st.create(Key::new("pods", "default", "q"), pod("q", None)).unwrap();
        assert_eq!(schedule_once(&st, t0()), 1);
        assert_eq!(scheduled_to(&st, "q").as_deref(), Some("a"));
    }

    #[test]
    fn tolerations_and_node_selector_requirements() {
        let t = |v: Value| move |k: &str, val: &str, e: &str| tolerates(&v, k, val, e);
        let exact = t(json!({"key": "k", "value": "v", "effect": "NoSchedule"}));
        assert!(exact("k", "v", "NoSchedule"));
        assert!(!exact("k", "w", "NoSchedule"));
        assert!(!exact("k", "v", "NoExecute"));
        assert!(!exact("j", "v", "NoSchedule"));
        let any_effect = t(json!({"key": "k", "operator": "Exists"}));
        assert!(any_effect("k", "x", "NoExecute") && !any_effect("j", "x", "NoExecute"));
        let all = t(json!({"operator": "Exists"}));
        assert!(all("anything", "at all", "NoSchedule"));
        // An empty key with Equal matches only an empty key... of which a taint has none.
        assert!(!t(json!({"operator": "Equal", "value": "v"}))("k", "", "NoSchedule"));
        assert!(!t(json!({"key": "k", "operator": "Bogus"}))("k", "", "NoSchedule"));
        let r = |op: &str, values: Value, actual: Option<&str>| {
            requirement_holds(&json!({"key": "x", "operator": op, "values": values}), actual)
        };
        assert!(r("In", json!(["a", "b"]), Some("b")) && !r("In", json!(["a"]), None));
        assert!(r("NotIn", json!(["a"]), None) && !r("NotIn", json!(["a"]), Some("a")));
        assert!(r("Exists", json!([]), Some("")) && r("DoesNotExist", json!([]), None));
        assert!(r("Gt", json!(["5"]), Some("6")) && !r("Gt", json!(["5"]), Some("5")));
        assert!(r("Lt", json!(["5"]), Some("4")) && !r("Lt", json!(["x"]), Some("4")));
        assert!(!r("Gt", json!(["1", "2"]), Some("3")), "exactly one value");
        let node = json!({"metadata": {"name": "n", "labels": {"zone": "z1"}}});
        let with = |affinity: Value| json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": affinity}}}});
        let zone = |z: &str| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [z]}]});
        assert!(selector_matches(&node, &with(json!({"nodeSelectorTerms": [zone("z2"), zone("z1")]}))));
        assert!(!selector_matches(&node, &with(json!({"nodeSelectorTerms": [zone("z2")]}))));
        assert!(
            !selector_matches(&node, &with(json!({"nodeSelectorTerms": [{}]}))),
            "an empty term selects nothing"
        );
        assert!(!selector_matches(&node, &json!({"spec": {"nodeSelector": {"zone": "z2"}}})));
        assert!(selector_matches(&node, &json!({"spec": {"nodeSelector": {"zone": "z1"}}})));
    }

    #[test]
    fn silent_nodes_become_unknown_after_the_grace_period() {
        let st = Store::in_memory();
        let at = |secs| t0() + Duration::from_secs(secs);
        let mut lc = NodeLifecycle::new();
        st.create(Key::new("nodes", "", "n1"), node("n1", "True", "110", "1", T0)).unwrap();
        assert_eq!(lc.run_once(&st, at(0)), 0);
        assert_eq!(lc.run_once(&st, at(30)), 0);
        // A renewal seen at 40 s restarts the grace period.
        let lease = json!({"metadata": {"name": "n1"}, "spec": {"renewTime": "2024-12-11T10:00:40.000000Z"}});
        st.create(Key::new("leases.coordination.k8s.io", "kube-node-lease", "n1"), lease).unwrap();
        assert_eq!(lc.run_once(&st, at(40)), 0);
        assert_eq!(lc.run_once(&st, at(90)), 0);
        assert_eq!(lc.run_once(&st, at(91)), 1);
        let n = st.get(&Key::new("nodes", "", "n1")).unwrap();
        let ready = condition(&n, "Ready").unwrap();
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["lastHeartbeatTime"], T0);
        assert_eq!(lc.run_once(&st, at(120)), 0);
    }

    #[test]
    fn a_restarted_controller_gives_every_node_a_fresh_grace_period() {
        let st = Store::in_memory();
        st.create(Key::new("nodes", "", "n1"), node("n1", "True", "110", "1", T0)).unwrap();
        // Ten minutes after the node's last heartbeat, a new controller first sees it.
        let mut lc = NodeLifecycle::new();
        let start = t0() + Duration::from_secs(600);
        assert_eq!(lc.run_once(&st, start), 0);
        assert_eq!(lc.run_once(&st, start + NODE_GRACE), 0);
        assert_eq!(lc.run_once(&st, start + NODE_GRACE + Duration::from_secs(1)), 1);
        // A deleted node is forgotten.
        st.delete::<StoreError>(&Key::new("nodes", "", "n1"), |_| Ok(())).unwrap();
        assert_eq!(lc.run_once(&st, start + Duration::from_secs(700)), 0);
        assert!(lc.seen.is_empty());
    }
}
