//! The in-process controllers (the namespace controller lives beside the API it drives, in
//! `Api::namespace_controller_once`): the scheduler (binds pods without `spec.nodeName` to a Ready
//! node with room, or marks them `PodScheduled=False` with a `FailedScheduling` event) and the
//! node lifecycle controller (a node whose lease and status have not been renewed within the
//! grace period gets its conditions set to `Unknown`). As in kube-controller-manager, the grace
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
        && !node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false)
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

/// Why a node cannot take a pod, or `None` when it can.
fn misfit(node: &Value, pod: &Value, bound: &[&Value]) -> Option<&'static str> {
    if !node_ready(node) {
        return Some("node(s) were not ready");
    }
    let one = 1_000_000_000i128;
    if allocatable(node, "pods").is_some_and(|max| (bound.len() as i128 + 1) * one > max) {
        return Some("Too many pods");
    }
    for (res, why) in [("cpu", "Insufficient cpu"), ("memory", "Insufficient memory")] {
        let used: i128 = bound.iter().map(|p| pod_request(p, res)).sum();
        if allocatable(node, res).is_some_and(|a| used + pod_request(pod, res) > a) {
            return Some(why);
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
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut best: Option<(&Value, usize)> = None;
        for node in &nodes {
            let Some(nname) = s(node, "/metadata/name") else { continue };
            let on: Vec<&Value> = per_node.get(nname).map(|v| v.iter().collect()).unwrap_or_default();
            match misfit(node, pod, &on) {
                Some(why) => *reasons.entry(why).or_default() += 1,
                None => {
                    if best.is_none_or(|(_, n)| on.len() < n) {
                        best = Some((node, on.len()));
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
            let detail: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
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
