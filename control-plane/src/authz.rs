//! Authorization: what an authenticated user may do.
//!
//! Users in `system:masters` may do everything. A node (`system:node:<name>` in
//! `system:nodes`) gets what the Node authorizer, the `system:node` role and the
//! NodeRestriction admission plugin of kube-apiserver 1.32 give a kubelet, reduced to the
//! resources served here:
//! - its own Node: get, and list/watch with `fieldSelector=metadata.name=<name>`; create,
//!   update, patch and delete it and its status;
//! - pods bound to it (`spec.nodeName`): get, list/watch with `fieldSelector=spec.nodeName=<name>`,
//!   update/patch their status, delete them;
//! - its Lease in `kube-node-lease` (named after the node): get, create, update, patch, delete;
//! - events (core/v1 and events.k8s.io/v1): create, update, patch;
//! - secrets a pod bound to it uses (its `imagePullSecrets`, secret volumes, environment from
//!   secrets: the graph edges secret → pod → node): get one by name, or list/watch one with
//!   `fieldSelector=metadata.name=<name>` (the name the apiserver's request info takes from
//!   such a selector); never create, update, patch or delete one, nor list or watch them all.
//!
//! Anything else is 403 Forbidden with kube-apiserver's message. What a node may write into
//! the objects it reaches is then [`crate::admission`]'s decision. The decision is a pure
//! function of the request's attributes and of what the [`Graph`] says about the objects they
//! name; the caller answers from its store.

use crate::api::status::ApiError;
use crate::auth::User;
use crate::selector::FieldSelector;

/// The group whose members may do everything.
pub const MASTERS: &str = "system:masters";
/// The group of nodes.
pub const NODES: &str = "system:nodes";
/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: &'a str,
    /// The API group (empty for core).
    pub group: &'a str,
    /// The resource's plural name.
    pub resource: &'a str,
    /// The subresource (`status`, `log`), if any.
    pub subresource: Option<&'a str>,
    /// The namespace, empty for cluster-scoped resources.
    pub namespace: &'a str,
    /// The object's name: from the path, or for a create from the body.
    pub name: &'a str,
    /// The `fieldSelector` query parameter.
    pub field_selector: Option<&'a str>,
}

/// The relationships the Node authorizer's graph holds, looked up where the objects are kept.
pub trait Graph {
    /// The node the pod `namespace/name` is bound to, if the pod exists and is bound.
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String>;
    /// Whether a pod bound to `node` in `namespace` uses the secret `name`.
    fn node_uses_secret(&self, node: &str, namespace: &str, name: &str) -> bool;
}

/// The name a list or watch asks for with `fieldSelector=metadata.name=<name>` (among any other
/// requirements), as the apiserver's request info takes it: only a valid path segment.
pub fn selected_name(field_selector: Option<&str>) -> Option<String> {
    let sel = FieldSelector::parse(field_selector?).ok()?;
    sel.requirements.into_iter().find_map(|r| match r {
        crate::selector::FieldRequirement::Equals(f, v)
            if f == "metadata.name" && !v.is_empty() && v != "." && v != ".." && !v.contains(['/', '%']) =>
        {
            Some(v)
        }
        _ => None,
    })
}

/// The kube-apiserver verb of a request.
pub fn verb(method: &str, has_name: bool, watch: bool) -> &'static str {
    match (method, has_name) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// The node a user is, if it is one.
pub fn node_name(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES) {
        return None;
    }
    user.name.strip_prefix("system:node:").filter(|n| !n.is_empty())
}

/// Whether `selector` is the single requirement `field=value` (or `field==value`): one
/// requirement, on `field`, that `value` meets and any other value fails (which rules out
/// `field!=x`).
fn selects_only(selector: Option<&str>, field: &str, value: &str) -> bool {
    let Some(sel) = selector.and_then(|s| FieldSelector::parse(s).ok()) else { return false };
    let fields: Vec<&str> = sel.fields().collect();
    let other = format!("{value}\u{0}other");
    fields == [field]
        && sel.matches(&|f: &str| (f == field).then(|| value.to_string()))
        && !sel.matches(&|f: &str| (f == field).then(|| other.clone()))
}

/// Decides a request; `graph` answers for the objects it names.
pub fn authorize(user: &User, attrs: &Attributes<'_>, graph: &dyn Graph) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let reason = match node_name(user) {
        Some(node) => match node_allows(node, attrs, graph) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        },
        None => String::new(),
    };
    Err(forbidden(&user.name, attrs, &reason))
}

/// The Node authorizer's rules; `Err` carries its reason.
fn node_allows(node: &str, a: &Attributes<'_>, graph: &dyn Graph) -> Result<(), String> {
    let writes = ["create", "update", "patch", "delete"];
    let related = || format!("no relationship found between node '{node}' and this object");
    match (a.group, a.resource, a.subresource) {
        ("", "nodes", None | Some("status")) => {
            let own = match a.verb {
                "list" | "watch" => selects_only(a.field_selector, "metadata.name", node),
                v if v == "get" || writes.contains(&v) => a.name == node,
                _ => false,
            };
            if own {
                Ok(())
            } else {
                Err(format!("node '{node}' cannot {} node '{}'", a.verb, a.name))
            }
        }
        ("", "pods", sub) => {
            let ok = match (a.verb, sub) {
                ("list" | "watch", None) => selects_only(a.field_selector, "spec.nodeName", node),
                ("get" | "delete", None) | ("get" | "update" | "patch", Some("status")) => {
                    graph.pod_node(a.namespace, a.name).as_deref() == Some(node)
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(related())
            }
        }
        ("", "secrets", sub) => {
            if !["get", "list", "watch"].contains(&a.verb) {
                Err("can only read resources of this type".into())
            } else if sub.is_some() {
                Err("cannot read subresource".into())
            } else if a.namespace.is_empty() {
                Err("can only read namespaced object of this type".into())
            } else if a.name.is_empty() {
                Err("No Object name found".into())
            } else if graph.node_uses_secret(node, a.namespace, a.name) {
                Ok(())
            } else {
                Err(related())
            }
        }
        ("coordination.k8s.io", "leases", None) => {
            if a.namespace == LEASE_NAMESPACE
                && a.name == node
                && (a.verb == "get" || writes.contains(&a.verb))
            {
                Ok(())
            } else {
                Err(format!("can only access node lease with the same name as the requesting node '{node}'"))
            }
        }
        ("" | "events.k8s.io", "events", None) if ["create", "update", "patch"].contains(&a.verb) => Ok(()),
        _ => Err(String::new()),
    }
}

/// kube-apiserver's 403: `pods "p" is forbidden: User "u" cannot get resource "pods" in API
/// group "" in the namespace "default": reason`.
pub fn forbidden(user: &str, a: &Attributes<'_>, reason: &str) -> ApiError {
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let subject =
        if a.name.is_empty() { a.resource.to_string() } else { format!("{} \"{}\"", a.resource, a.name) };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let mut message = format!(
        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        a.verb, a.group
    );
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    ApiError::denied(message, a.resource, a.group, a.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> User {
        User { name: format!("system:node:{n}"), groups: vec![NODES.into()] }
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes { verb, group, resource, subresource: None, namespace: ns, name, field_selector: None }
    }

    /// Every pod is bound to `bound_to`; pods on `n1` use the secrets `pull` and `vol` in
    /// `default`, pods on `n2` the secret `other`.
    struct Fake<'a> {
        bound_to: Option<&'a str>,
    }

    impl Graph for Fake<'_> {
        fn pod_node(&self, _namespace: &str, _name: &str) -> Option<String> {
            self.bound_to.map(String::from)
        }
        fn node_uses_secret(&self, node: &str, namespace: &str, name: &str) -> bool {
            namespace == "default"
                && match node {
                    "n1" => ["pull", "vol"].contains(&name),
                    "n2" => name == "other",
                    _ => false,
                }
        }
    }

    fn decide(user: &User, a: &Attributes<'_>, bound_to: Option<&str>) -> Result<(), String> {
        authorize(user, a, &Fake { bound_to }).map_err(|e| e.message)
    }

    #[test]
    fn a_node_reads_only_the_secrets_its_pods_use() {
        let n1 = node("n1");
        let get = |name| attrs("get", "", "secrets", "default", name);
        assert!(decide(&n1, &get("pull"), None).is_ok());
        assert!(decide(&n1, &get("vol"), None).is_ok());
        assert_eq!(
            decide(&n1, &get("other"), None).unwrap_err(),
            "secrets \"other\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
        );
        assert!(decide(&n1, &get("nobody"), None).is_err());
        assert!(decide(&n1, &attrs("get", "", "secrets", "kube-system", "pull"), None).is_err());
        // One secret by name may be listed and watched (a kubelet's watch-based secret manager).
        for verb in ["list", "watch"] {
            let mut one = attrs(verb, "", "secrets", "default", "pull");
            one.field_selector = Some("metadata.name=pull");
            assert!(decide(&n1, &one, None).is_ok(), "{verb}");
            assert_eq!(
                decide(&n1, &attrs(verb, "", "secrets", "default", ""), None).unwrap_err(),
                format!("secrets is forbidden: User \"system:node:n1\" cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found")
            );
        }
        assert!(decide(&n1, &attrs("list", "", "secrets", "", ""), None)
            .unwrap_err()
            .ends_with("can only read namespaced object of this type"));
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            let e = decide(&n1, &attrs(verb, "", "secrets", "default", "pull"), None).unwrap_err();
            assert!(e.ends_with(": can only read resources of this type"), "{verb}: {e}");
        }
        let mut sub = get("pull");
        sub.subresource = Some("status");
        assert!(decide(&n1, &sub, None).unwrap_err().ends_with("cannot read subresource"));
        let admin = User { name: "admin".into(), groups: vec![MASTERS.into()] };
        assert!(decide(&admin, &attrs("list", "", "secrets", "", ""), None).is_ok());
    }

    #[test]
    fn a_metadata_name_selector_names_the_object() {
        assert_eq!(selected_name(Some("metadata.name=pull")).as_deref(), Some("pull"));
        assert_eq!(selected_name(Some("type=Opaque,metadata.name==pull")).as_deref(), Some("pull"));
        for none in [
            None,
            Some(""),
            Some("metadata.name!=pull"),
            Some("metadata.name="),
            Some("metadata.name=a/b"),
            Some("metadata.name=.."),
            Some("spec.nodeName=n1"),
            Some("=bad"),
        ] {
            assert_eq!(selected_name(none), None, "{none:?}");
        }
    }

    #[test]
    fn admins_may_do_everything_and_strangers_nothing() {
        let admin = User { name: "admin".into(), groups: vec![MASTERS.into()] };
        assert!(decide(&admin, &attrs("deletecollection", "", "pods", "default", ""), None).is_ok());
        let other = User { name: "someone".into(), groups: vec![] };
        assert_eq!(
            decide(&other, &attrs("list", "", "pods", "default", ""), None).unwrap_err(),
            "pods is forbidden: User \"someone\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        // A node group member without a node name is no node.
        let odd = User { name: "system:node:".into(), groups: vec![NODES.into()] };
        assert!(decide(&odd, &attrs("get", "", "nodes", "", ""), None).is_err());
    }

    #[test]
    fn a_node_reaches_only_its_own_node_object() {
        let n1 = node("n1");
        for verb in ["get", "create", "update", "patch", "delete"] {
            assert!(decide(&n1, &attrs(verb, "", "nodes", "", "n1"), None).is_ok(), "{verb}");
            assert!(decide(&n1, &attrs(verb, "", "nodes", "", "n2"), None).is_err(), "{verb}");
        }
        let mut status = attrs("patch", "", "nodes", "", "n2");
        status.subresource = Some("status");
        assert_eq!(
            decide(&n1, &status, None).unwrap_err(),
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope: node 'n1' cannot patch node 'n2'"
        );
        let mut list = attrs("list", "", "nodes", "", "");
        assert!(decide(&n1, &list, None).is_err(), "listing every node");
        list.field_selector = Some("metadata.name=n1");
        assert!(decide(&n1, &list, None).is_ok());
        list.field_selector = Some("metadata.name=n2");
        assert!(decide(&n1, &list, None).is_err());
        list.field_selector = Some("metadata.name!=n2");
        assert!(decide(&n1, &list, None).is_err(), "a negation selects other nodes too");
        list.field_selector = Some("metadata.name=n1,metadata.name=n2");
        assert!(decide(&n1, &list, None).is_err());
    }

    #[test]
    fn a_node_reaches_only_pods_bound_to_it() {
        let n1 = node("n1");
        let mut watch = attrs("watch", "", "pods", "", "");
        assert!(decide(&n1, &watch, None).is_err());
        watch.field_selector = Some("spec.nodeName=n1");
        assert!(decide(&n1, &watch, None).is_ok());
        watch.field_selector = Some("spec.nodeName=n2");
        assert!(decide(&n1, &watch, None).is_err());
        watch.field_selector = Some("status.phase=Running");
        assert!(decide(&n1, &watch, None).is_err());
        let get = attrs("get", "", "pods", "default", "web");
        assert!(decide(&n1, &get, Some("n1")).is_ok());
        assert_eq!(
            decide(&n1, &get, Some("n2")).unwrap_err(),
            "pods \"web\" is forbidden: User \"system:node:n1\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
        );
        assert!(decide(&n1, &get, None).is_err(), "an unbound or missing pod");
        let mut status = attrs("patch", "", "pods", "default", "web");
        status.subresource = Some("status");
        assert!(decide(&n1, &status, Some("n1")).is_ok());
        assert!(decide(&n1, &status, Some("n2")).is_err());
        assert!(decide(&n1, &attrs("delete", "", "pods", "default", "web"), Some("n1")).is_ok());
        assert!(
            decide(&n1, &attrs("update", "", "pods", "default", "web"), Some("n1")).is_err(),
            "only status"
        );
        assert!(decide(&n1, &attrs("create", "", "pods", "default", "web"), None).is_err());
        let mut log = attrs("get", "", "pods", "default", "web");
        log.subresource = Some("log");
        assert!(decide(&n1, &log, Some("n1")).is_err());
    }

    #[test]
    fn a_node_keeps_its_own_lease_and_writes_events() {
        let n1 = node("n1");
        let lease = |verb, ns, name| attrs(verb, "coordination.k8s.io", "leases", ns, name);
        for verb in ["get", "create", "update", "patch", "delete"] {
            assert!(decide(&n1, &lease(verb, "kube-node-lease", "n1"), None).is_ok(), "{verb}");
            assert!(decide(&n1, &lease(verb, "kube-node-lease", "n2"), None).is_err(), "{verb}");
            assert!(decide(&n1, &lease(verb, "default", "n1"), None).is_err(), "{verb}");
        }
        assert!(decide(&n1, &lease("list", "kube-node-lease", ""), None).is_err());
        for verb in ["create", "update", "patch"] {
            assert!(decide(&n1, &attrs(verb, "", "events", "default", "e"), None).is_ok());
            assert!(decide(&n1, &attrs(verb, "events.k8s.io", "events", "default", "e"), None).is_ok());
        }
        assert!(decide(&n1, &attrs("list", "", "events", "default", ""), None).is_err());
        assert!(decide(&n1, &attrs("delete", "", "events", "default", "e"), None).is_err());
        assert!(decide(&n1, &attrs("get", "", "namespaces", "", "default"), None).is_err());
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        assert_eq!(verb("GET", true, false), "get");
        assert_eq!(verb("GET", false, false), "list");
        assert_eq!(verb("GET", false, true), "watch");
        assert_eq!(verb("POST", false, false), "create");
        assert_eq!(verb("PUT", true, false), "update");
        assert_eq!(verb("PATCH", true, false), "patch");
        assert_eq!(verb("DELETE", true, false), "delete");
        assert_eq!(verb("DELETE", false, false), "deletecollection");
        assert_eq!(verb("BREW", true, false), "unknown");
    }
}
