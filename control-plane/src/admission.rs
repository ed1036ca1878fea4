//! Admission: the NodeRestriction plugin of kube-apiserver 1.32, for the resources served here.
//!
//! The Node authorizer ([`crate::authz`]) decides which objects a node may reach; this plugin
//! decides what it may write into them. It runs on creates, updates (PUT and every PATCH, of
//! the object or its `status`) and deletes made with a node's credential
//! (`system:node:<name>` in `system:nodes`), after the patch is applied and before the object
//! is validated, and compares the stored object with the proposed one:
//! - **Nodes**: only its own Node. On create, no `spec.configSource` and no label a kubelet
//!   may not set; on update, no new non-nil `configSource`, no change to `spec.taints` (a
//!   node may not remove a taint an admin set, nor add one after registering), and no
//!   added, changed or removed label it may not set. The labels a kubelet may set are
//!   `kubernetes.io/hostname`, `kubernetes.io/{os,arch}`, `beta.kubernetes.io/{os,arch,instance-type}`,
//!   `node.kubernetes.io/instance-type`, `topology.kubernetes.io/{region,zone}`,
//!   `failure-domain.beta.kubernetes.io/{region,zone}`, anything under `kubelet.kubernetes.io/`
//!   or `node.kubernetes.io/` (and their subdomains), and any label outside `kubernetes.io`
//!   and `k8s.io`; `node-restriction.kubernetes.io/` labels never. This holds through
//!   `nodes/NAME/status` too, and a node that deletes its Node meets the create rule again.
//! - **Pods**: deleting only pods bound to it; updating only the `status` of pods bound to it,
//!   without touching their labels or `status.resourceClaimStatuses`. (Creating pods, which the
//!   plugin allows for mirror pods, is refused earlier by the authorizer: this server has no
//!   static pods.)
//! - **Leases**: only in `kube-node-lease`, only the one named after the node.
//! - **Events**: nothing beyond the authorizer (the plugin has no rule for them).
//!
//! A refusal is 403 Forbidden with the plugin's words: `nodes "n1" is forbidden: node "n1" is
//! not allowed to modify taints`.

use crate::api::status::ApiError;
use crate::auth::User;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// What a request does to an object, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST.
    Create,
    /// PUT or PATCH.
    Update,
    /// DELETE.
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// The request, as the plugin sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The operation.
    pub op: Operation,
    /// The API group (empty for core).
    pub group: &'a str,
    /// The resource's plural name.
    pub resource: &'a str,
    /// The subresource, if any.
    pub subresource: Option<&'a str>,
    /// The namespace (empty for cluster-scoped objects).
    pub namespace: &'a str,
    /// The object's name (for a create, the name in the body).
    pub name: &'a str,
    /// The stored object (update, delete).
    pub old: Option<&'a Value>,
    /// The proposed object (create, update).
    pub new: Option<&'a Value>,
}

/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The label namespace only admins may set on nodes (`v1.LabelNamespaceNodeRestriction`).
const NODE_RESTRICTION: &str = "node-restriction.kubernetes.io";
/// Labels a kubelet may set on its own Node (k8s.io/kubelet `well_known_labels.go`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
/// Label namespaces a kubelet may set labels in, with their subdomains.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Admits a request of `user`: users who are not nodes pass; a node passes only what
/// NodeRestriction lets through.
pub fn admit(user: &User, r: &Request<'_>) -> Result<(), ApiError> {
    if !user.groups.iter().any(|g| g == crate::authz::NODES) {
        return Ok(());
    }
    let Some(node) = crate::authz::node_name(user) else {
        return Err(forbidden(r, &format!("could not determine node from user \"{}\"", user.name)));
    };
    let why = match (r.group, r.resource) {
        ("", "pods") => admit_pod(node, r),
        ("", "nodes") => admit_node(node, r),
        ("coordination.k8s.io", "leases") => admit_lease(node, r),
        _ => Ok(()),
    };
    why.map_err(|msg| forbidden(r, &msg))
}

/// `errors.NewForbidden` for the request's resource: `pods "p" is forbidden: why`.
fn forbidden(r: &Request<'_>, why: &str) -> ApiError {
    let qualified =
        if r.group.is_empty() { r.resource.to_string() } else { format!("{}.{}", r.resource, r.group) };
    let message = if r.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", r.name)
    };
    ApiError::denied(message, r.resource, r.group, r.name)
}

fn node_name_of(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).unwrap_or("")
}

fn admit_pod(node: &str, r: &Request<'_>) -> Result<(), String> {
    match (r.subresource, r.op) {
        (None, Operation::Delete) => {
            if node_name_of(r.old) != node {
                return Err(format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"));
            }
            Ok(())
        }
        (None, Operation::Create) => Err(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
        )),
        (None, op) => Err(format!(
            "unexpected operation \"{}\", node \"{node}\" can only create and delete mirror pods",
            op.name()
        )),
        (Some("status"), Operation::Update) => {
            if node_name_of(r.old) != node {
                return Err(format!(
                    "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            if labels(r.old) != labels(r.new) {
                return Err(format!("node \"{node}\" cannot update labels through pod status"));
            }
            let claims = |p: Option<&Value>| {
                p.and_then(|p| p.pointer("/status/resourceClaimStatuses"))
                    .filter(|v| !is_empty(v))
                    .map(|v| {
                        v.as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|c| (c.get("name").cloned(), c.get("resourceClaimName").cloned()))
                                    .collect::<Vec<_>>()
                            })
                            .unwrap_or_default()
                    })
                    .unwrap_or_default()
            };
            if claims(r.old) != claims(r.new) {
                return Err(format!("node \"{node}\" cannot update resource claim statues"));
            }
            Ok(())
        }
        (Some("status"), op) => Err(format!("unexpected operation \"{}\"", op.name())),
        (Some(sub), _) => {
            Err(format!("unexpected pod subresource \"{sub}\", only 'status' and 'eviction' are allowed"))
        }
    }
}

/// Null, an empty list and an empty map are all "not set" (apimachinery's semantic equality
/// treats nil and empty alike).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn labels(obj: Option<&Value>) -> Map<String, Value> {
    obj.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn spec_field<'a>(obj: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    obj.and_then(|o| o.get("spec")).and_then(|s| s.get(field)).filter(|v| !is_empty(v))
}

fn admit_node(node: &str, r: &Request<'_>) -> Result<(), String> {
    if r.name != node {
        return Err(format!("node \"{node}\" is not allowed to modify node \"{}\"", r.name));
    }
    match r.op {
        Operation::Create => {
            if spec_field(r.new, "configSource").is_some() {
                return Err(format!(
                    "node \"{node}\" is not allowed to create pods with a non-nil configSource"
                ));
            }
            let forbidden = forbidden_labels(&modified_labels(&labels(r.new), &Map::new()));
            if !forbidden.is_empty() {
                return Err(format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    forbidden.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(())
        }
        Operation::Update => {
            let config = spec_field(r.new, "configSource");
            if config.is_some() && config != spec_field(r.old, "configSource") {
                return Err(format!(
                    "node \"{node}\" is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if spec_field(r.new, "taints") != spec_field(r.old, "taints") {
                return Err(format!("node \"{node}\" is not allowed to modify taints"));
            }
            let forbidden = forbidden_labels(&modified_labels(&labels(r.new), &labels(r.old)));
            if !forbidden.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    forbidden.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(())
        }
        Operation::Delete => Ok(()),
    }
}

/// The keys whose label differs between `a` and `b` (added, removed or changed).
fn modified_labels(a: &Map<String, Value>, b: &Map<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for (k, v) in b {
        if a.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    out
}

/// The prefix of a label key (`example.com` of `example.com/x`), empty when it has none.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a kubelet may set the label `key` on its own Node (`kubeletapis.IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES.iter().any(|d| in_namespace(label_namespace(key), d))
}

/// The labels among `modified` a node may not add, change or remove.
fn forbidden_labels(modified: &BTreeSet<String>) -> BTreeSet<String> {
    modified
        .iter()
        .filter(|key| {
            let ns = label_namespace(key);
            let kube = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
            in_namespace(ns, NODE_RESTRICTION) || (kube && !is_kubelet_label(key))
        })
        .cloned()
        .collect()
}

fn admit_lease(node: &str, r: &Request<'_>) -> Result<(), String> {
    if r.namespace != LEASE_NAMESPACE {
        return Err(format!("can only access leases in the \"{LEASE_NAMESPACE}\" system namespace"));
    }
    if r.name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_user(n: &str) -> User {
        User { name: format!("system:node:{n}"), groups: vec![crate::authz::NODES.into()] }
    }

    fn req<'a>(
        op: Operation,
        resource: &'a str,
        sub: Option<&'a str>,
        name: &'a str,
        old: Option<&'a Value>,
        new: Option<&'a Value>,
    ) -> Request<'a> {
        Request { op, group: "", resource, subresource: sub, namespace: "", name, old, new }
    }

    fn msg(r: Result<(), ApiError>) -> String {
        let e = r.expect_err("refused");
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        e.message
    }

    fn node_obj(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn kubelet_labels_follow_the_kubelet_list() {
        for ok in [
            "kubernetes.io/hostname",
            "kubernetes.io/os",
            "beta.kubernetes.io/arch",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/anything",
            "a.kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
            "example.com/role",
            "plain",
        ] {
            assert!(forbidden_labels(&BTreeSet::from([ok.to_string()])).is_empty(), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/master",
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            "kubernetes.io/role",
            "k8s.io/x",
            "sub.k8s.io/x",
            "topology.kubernetes.io/other",
        ] {
            assert!(!forbidden_labels(&BTreeSet::from([bad.to_string()])).is_empty(), "{bad}");
        }
        // A suffix is a subdomain only after a dot.
        assert!(forbidden_labels(&BTreeSet::from(["evilkubernetes.io/x".to_string()])).is_empty());
    }

    #[test]
    fn a_node_may_not_touch_taints_or_restricted_labels() {
        let n1 = node_user("n1");
        let defaults = json!({"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"});
        let admin_taint = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        let old = node_obj(defaults.clone(), admin_taint.clone());
        // Registering with the default labels and with taints is fine.
        let fresh = node_obj(defaults.clone(), admin_taint.clone());
        assert!(admit(&n1, &req(Operation::Create, "nodes", None, "n1", None, Some(&fresh))).is_ok());
        // Removing the admin's taint.
        let untainted = node_obj(defaults.clone(), json!(null));
        let upd = |sub, new| req(Operation::Update, "nodes", sub, "n1", Some(&old), Some(new));
        assert_eq!(
            msg(admit(&n1, &upd(None, &untainted))),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"
        );
        // A heartbeat that keeps everything passes, through the object and its status.
        assert!(admit(&n1, &upd(None, &old)).is_ok());
        assert!(admit(&n1, &upd(Some("status"), &old)).is_ok());
        // Empty and absent taints are the same.
        let none = node_obj(defaults.clone(), json!([]));
        let absent = json!({"metadata": {"name": "n1", "labels": defaults.clone()}});
        assert!(admit(&n1, &req(Operation::Update, "nodes", None, "n1", Some(&none), Some(&absent))).is_ok());
        // Restricted labels, added through the object or its status.
        let mut more = defaults.clone();
        more["node-role.kubernetes.io/control-plane"] = json!("");
        more["node-restriction.kubernetes.io/pool"] = json!("a");
        more["example.com/free"] = json!("yes");
        let relabelled = node_obj(more, admin_taint.clone());
        for sub in [None, Some("status")] {
            assert_eq!(
                msg(admit(&n1, &upd(sub, &relabelled))),
                "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"
            );
        }
        // ... or on re-registration.
        assert_eq!(
            msg(admit(&n1, &req(Operation::Create, "nodes", None, "n1", None, Some(&relabelled)))),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"
        );
        // Removing an admin's label is a modification too.
        let mut admin_labelled = defaults.clone();
        admin_labelled["node-role.kubernetes.io/worker"] = json!("");
        let with_role = node_obj(admin_labelled, admin_taint.clone());
        let without_role = node_obj(defaults.clone(), admin_taint.clone());
        assert!(admit(
            &n1,
            &req(Operation::Update, "nodes", None, "n1", Some(&with_role), Some(&without_role))
        )
        .is_err());
        // configSource.
        let mut cfg = old.clone();
        cfg["spec"]["configSource"] = json!({"configMap": {"name": "x"}});
        assert_eq!(
            msg(admit(&n1, &req(Operation::Create, "nodes", None, "n1", None, Some(&cfg)))),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to create pods with a non-nil configSource"
        );
        assert!(msg(admit(&n1, &upd(None, &cfg)))
            .ends_with("not allowed to update configSource to a new non-nil configSource"));
        // Another node's object, and no node name.
        assert_eq!(
            msg(admit(&n1, &req(Operation::Delete, "nodes", None, "n2", None, None))),
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let nameless = User { name: "system:node:".into(), groups: vec![crate::authz::NODES.into()] };
        assert!(msg(admit(&nameless, &upd(None, &old)))
            .ends_with("could not determine node from user \"system:node:\""));
        // Admins are not restricted.
        let admin = User { name: "admin".into(), groups: vec![crate::authz::MASTERS.into()] };
        assert!(admit(&admin, &upd(None, &untainted)).is_ok());
    }

    #[test]
    fn a_node_updates_only_the_status_of_its_pods_and_not_their_labels() {
        let n1 = node_user("n1");
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "a"}}, "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}});
        let mut running = pod.clone();
        running["status"]["phase"] = json!("Running");
        let upd = |old, new| Request {
            op: Operation::Update,
            group: "",
            resource: "pods",
            subresource: Some("status"),
            namespace: "default",
            name: "p",
            old: Some(old),
            new: Some(new),
        };
        assert!(admit(&n1, &upd(&pod, &running)).is_ok());
        let mut relabelled = running.clone();
        relabelled["metadata"]["labels"]["app"] = json!("b");
        assert_eq!(
            msg(admit(&n1, &upd(&pod, &relabelled))),
            "pods \"p\" is forbidden: node \"n1\" cannot update labels through pod status"
        );
        let mut claimed = running.clone();
        claimed["status"]["resourceClaimStatuses"] = json!([{"name": "c", "resourceClaimName": "x"}]);
        assert!(msg(admit(&n1, &upd(&pod, &claimed))).ends_with("cannot update resource claim statues"));
        let mut other = pod.clone();
        other["spec"]["nodeName"] = json!("n2");
        assert!(msg(admit(&n1, &upd(&other, &running)))
            .ends_with("can only update pod status for pods with spec.nodeName set to itself"));
        let mut del = upd(&other, &running);
        del.op = Operation::Delete;
        del.subresource = None;
        assert!(msg(admit(&n1, &del))
            .ends_with("node \"n1\" can only delete pods with spec.nodeName set to itself"));
        del.old = Some(&pod);
        assert!(admit(&n1, &del).is_ok());
        let mut put = upd(&pod, &running);
        put.subresource = None;
        assert!(msg(admit(&n1, &put)).ends_with(
            "unexpected operation \"UPDATE\", node \"n1\" can only create and delete mirror pods"
        ));
    }

    #[test]
    fn a_node_keeps_to_its_own_lease() {
        let n1 = node_user("n1");
        let lease = |ns, name| Request {
            op: Operation::Update,
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: None,
            namespace: ns,
            name,
            old: None,
            new: None,
        };
        assert!(admit(&n1, &lease("kube-node-lease", "n1")).is_ok());
        assert_eq!(
            msg(admit(&n1, &lease("kube-node-lease", "n2"))),
            "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        assert!(msg(admit(&n1, &lease("default", "n1")))
            .ends_with("can only access leases in the \"kube-node-lease\" system namespace"));
        // Events have no rule of their own.
        let mut ev = lease("default", "e");
        ev.group = "";
        ev.resource = "events";
        assert!(admit(&n1, &ev).is_ok());
    }
}
