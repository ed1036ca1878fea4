//! The resources the control plane serves, in one table, and the discovery documents built
//! from it.

use serde_json::{json, Value};

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// The API group (empty for the core group).
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The plural name used in paths.
    pub plural: &'static str,
    /// The singular name.
    pub singular: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short_names: &'static [&'static str],
    /// Subresources (`status`, `log`).
    pub subresources: &'static [&'static str],
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Every served resource.
pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        subresources: &["status"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &["status", "log"],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        subresources: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
    },
];

/// The API groups besides the core group, with their one version.
pub const GROUPS: &[(&str, &str)] =
    &[("coordination.k8s.io", "v1"), ("events.k8s.io", "v1"), ("authentication.k8s.io", "v1")];

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`: who the caller is (not stored).
pub const SELF_SUBJECT_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

impl Resource {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store's name for the resource (`pods`, `leases.coordination.k8s.io`).
    pub fn store_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The name used in messages (`pods`, `leases.coordination.k8s.io`).
    pub fn qualified(&self) -> String {
        self.store_name()
    }

    /// Looks a resource up by group, version and plural.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }
}

/// The SelfSubjectReview answering `user` (with `system:authenticated`, as the apiserver adds it).
pub fn self_subject_review(user: &str, groups: &[String]) -> Value {
    let mut groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    groups.push("system:authenticated");
    json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
           "metadata": {"creationTimestamp": null},
           "status": {"userInfo": {"username": user, "groups": groups}}})
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = GROUPS.iter().find(|(g, _)| *g == group)?;
    let mut e = group_entry(g, v);
    crate::json::set(&mut e, "kind", json!("APIGroup")).ok()?;
    crate::json::set(&mut e, "apiVersion", json!("v1")).ok()?;
    Some(e)
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        out.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short_names, "storageVersionHash": "",
        }));
        for sub in r.subresources {
            let verbs: &[&str] = if *sub == "log" { &["get"] } else { &["get", "patch", "update"] };
            let kind = if *sub == "log" { "Pod" } else { r.kind };
            out.push(json!({
                "name": format!("{}/{}", r.plural, sub), "singularName": "", "namespaced": r.namespaced,
                "kind": kind, "verbs": verbs,
            }));
        }
    }
    if (group, version) == ("authentication.k8s.io", "v1") {
        out.push(json!({
            "name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": false,
            "kind": "SelfSubjectReview", "verbs": ["create"],
        }));
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_every_resource_and_subresource() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> =
            core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        for n in
            ["namespaces", "nodes", "nodes/status", "pods", "pods/status", "pods/log", "events", "secrets"]
        {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let leases = resource_list("coordination.k8s.io", "v1").unwrap();
        assert_eq!(leases["resources"][0]["name"], "leases");
        assert!(resource_list("apps", "v1").is_none());
        let authn = resource_list("authentication.k8s.io", "v1").unwrap();
        assert_eq!(authn["resources"][0]["name"], "selfsubjectreviews");
        assert_eq!(authn["resources"][0]["verbs"], json!(["create"]));
        assert_eq!(api_group_list()["groups"].as_array().unwrap().len(), GROUPS.len());
        assert_eq!(api_group("events.k8s.io").unwrap()["preferredVersion"]["version"], "v1");
        assert_eq!(
            Resource::find("coordination.k8s.io", "v1", "leases").unwrap().store_name(),
            "leases.coordination.k8s.io"
        );
    }
}
