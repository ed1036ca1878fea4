//! Test support: a small OpenAPI schema walker that checks JSON objects against the official
//! Kubernetes documents (the v1.32 OpenAPI v3 documents of core/v1, coordination.k8s.io/v1,
//! events.k8s.io/v1, `/api` and `/apis`, and the v2 `swagger.json` for what only it holds,
//! such as `/version`'s `Info`). It checks required fields, JSON types, `date-time` strings and
//! unknown properties. The documents are data kept outside the repository: they are looked
//! for in `K8S_OPENAPI_DIR` or in a `shared/k8s-openapi` directory beside any ancestor of the
//! workspace; without them [`Schemas::load`] says so and returns `None`, and callers skip only
//! the schema part of their checks.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The documents loaded, in lookup order.
pub const DOCUMENTS: [&str; 6] = [
    "api__v1_openapi.json",
    "apis__coordination.k8s.io__v1_openapi.json",
    "apis__events.k8s.io__v1_openapi.json",
    "api_openapi.json",
    "apis_openapi.json",
    "swagger.json",
];

/// The directory holding the official documents, if there is one.
pub fn find_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("K8S_OPENAPI_DIR") {
        return Some(PathBuf::from(d));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared").join("k8s-openapi"))
        .find(|d| d.join(DOCUMENTS[0]).is_file())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, as RFC 3339 and Go's time.Time marshal it.
pub fn is_date_time(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':')
}

/// The loaded documents.
pub struct Schemas {
    docs: Vec<Value>,
}

impl Schemas {
    /// Loads the official documents from [`find_dir`]; `None` (after a note on stderr saying
    /// the schema checks are skipped) when they are not there.
    pub fn load() -> Option<Schemas> {
        let Some(dir) = find_dir() else {
            eprintln!("note: shared/k8s-openapi not found (set K8S_OPENAPI_DIR); skipping schema checks");
            return None;
        };
        let mut docs = Vec::new();
        for f in DOCUMENTS {
            let text = std::fs::read_to_string(dir.join(f)).ok()?;
            docs.push(serde_json::from_str(&text).ok()?);
        }
        Some(Schemas { docs })
    }

    /// The definition `name` from the OpenAPI v3 documents, or else from the v2 one.
    fn lookup(&self, name: &str) -> Option<&Value> {
        let escaped = name.replace('~', "~0").replace('/', "~1");
        self.docs
            .iter()
            .find_map(|d| d.pointer(&format!("/components/schemas/{escaped}")))
            .or_else(|| self.docs.iter().find_map(|d| d.pointer(&format!("/definitions/{escaped}"))))
    }

    /// Whether the documents define `name`.
    pub fn has(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// The definition a served object of `apiVersion`/`kind` is checked against, when the
    /// documents have one (`Table`, for one, is not in them).
    pub fn definition_for(&self, api_version: &str, kind: &str) -> Option<String> {
        let name = match (api_version, kind) {
            (
                _,
                "Status" | "APIResourceList" | "APIVersions" | "APIGroupList" | "APIGroup" | "WatchEvent",
            ) => {
                format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}")
            }
            ("v1", k) => format!("io.k8s.api.core.v1.{k}"),
            (gv, k) => {
                let (group, version) = gv.split_once('/')?;
                let short = group.strip_suffix(".k8s.io").unwrap_or(group);
                format!("io.k8s.api.{short}.{version}.{k}")
            }
        };
        self.has(&name).then_some(name)
    }

    /// Errors found validating `v` against the named schema (e.g. `io.k8s.api.core.v1.Node`).
    pub fn validate(&self, name: &str, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        match self.lookup(name) {
            Some(s) => self.walk(s, v, name, &mut errs),
            None => errs.push(format!("no schema {name}")),
        }
        errs
    }

    fn walk(&self, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/components/schemas/").or_else(|| r.strip_prefix("#/definitions/"));
            match name.and_then(|n| self.lookup(n)) {
                Some(t) => return self.walk(t, v, path, errs),
                None => return errs.push(format!("{path}: unresolved {r}")),
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.walk(sub, v, path, errs);
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let ok = one.iter().any(|sub| {
                let mut e = Vec::new();
                self.walk(sub, v, path, &mut e);
                e.is_empty()
            });
            if !ok {
                errs.push(format!("{path}: matches none of oneOf"));
            }
            return;
        }
        if s.get("x-kubernetes-int-or-string").is_some() {
            if !(v.is_string() || v.is_i64() || v.is_u64()) {
                errs.push(format!("{path}: want int-or-string"));
            }
            return;
        }
        let ty = s.get("type").and_then(Value::as_str);
        let type_ok = match ty {
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            Some("array") => v.is_array(),
            Some("object") => v.is_object(),
            _ => true,
        };
        if !type_ok && !v.is_null() {
            errs.push(format!("{path}: want {ty:?}, got {v}"));
            return;
        }
        if let (Some("date-time"), Some(t)) = (s.get("format").and_then(Value::as_str), v.as_str()) {
            if !is_date_time(t) {
                errs.push(format!("{path}: bad date-time {t}"));
            }
        }
        if let Some(obj) = v.as_object() {
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        errs.push(format!("{path}: missing required {r}"));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties");
            for (k, val) in obj {
                let p = format!("{path}.{k}");
                match (props.and_then(|m| m.get(k)), extra) {
                    (Some(ps), _) => self.walk(ps, val, &p, errs),
                    (None, Some(e)) if e.is_object() => self.walk(e, val, &p, errs),
                    (None, _) if props.is_some() || extra.is_some() => {
                        errs.push(format!("{p}: unknown field"))
                    }
                    _ => {}
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, it) in arr.iter().enumerate() {
                self.walk(items, it, &format!("{path}[{i}]"), errs);
            }
        }
    }
}

/// Removes strategic-merge-patch directives (`$setElementOrder/...`, `{"$patch": ...}`
/// list entries) so a patch body can be checked against the object schema.
pub fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => {
            Value::Array(a.iter().filter(|x| x.get("$patch").is_none()).map(strip_directives).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_times() {
        assert!(is_date_time("2024-12-11T10:00:00Z"));
        assert!(is_date_time("2024-12-11T10:00:00.123456Z"));
        assert!(is_date_time("2024-12-11T10:00:00+01:00"));
        assert!(!is_date_time("2024-12-11 10:00:00Z"));
        assert!(!is_date_time("2024-12-11T10:00:00"));
        assert!(!is_date_time("2024-12-11T10:00:00.Z"));
        assert!(!is_date_time("yesterday"));
    }

    #[test]
    fn the_walker_can_fail() {
        let Some(s) = Schemas::load() else { return };
        let good = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                          "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(s.validate("io.k8s.api.core.v1.Pod", &good), Vec::<String>::new());
        let bad = json!({"kind": "Pod", "metadata": {"name": 5, "creationTimestamp": "today"},
                         "spec": {"containers": [{"image": "i", "bogus": 1}]}});
        let errs = s.validate("io.k8s.api.core.v1.Pod", &bad);
        for want in ["metadata.name", "creationTimestamp", "missing required name", "bogus: unknown field"] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want} not reported: {errs:?}");
        }
        assert_eq!(s.definition_for("v1", "Pod").as_deref(), Some("io.k8s.api.core.v1.Pod"));
        assert_eq!(
            s.definition_for("coordination.k8s.io/v1", "Lease").as_deref(),
            Some("io.k8s.api.coordination.v1.Lease")
        );
        assert_eq!(
            s.definition_for("v1", "Status").as_deref(),
            Some("io.k8s.apimachinery.pkg.apis.meta.v1.Status")
        );
        assert_eq!(s.definition_for("meta.k8s.io/v1", "Table"), None);
        assert!(s
            .validate("io.k8s.apimachinery.pkg.version.Info", &json!({"major": "1"}))
            .iter()
            .any(|e| e.contains("missing required")));
    }
}
