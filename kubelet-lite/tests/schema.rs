//! A small OpenAPI v3 schema walker for tests: checks required fields, JSON types, and
//! unknown properties against the official Kubernetes documents in
//! `../shared/k8s-openapi` (relative to the workspace).

use serde_json::Value;
use std::path::PathBuf;

pub struct Schemas {
    docs: Vec<Value>,
}

impl Schemas {
    /// Loads the core/v1 and coordination.k8s.io/v1 documents; `None` when absent.
    pub fn load() -> Option<Schemas> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s-openapi");
        let mut docs = Vec::new();
        for f in ["api__v1_openapi.json", "apis__coordination.k8s.io__v1_openapi.json"] {
            let text = std::fs::read_to_string(dir.join(f)).ok()?;
            docs.push(serde_json::from_str(&text).ok()?);
        }
        Some(Schemas { docs })
    }

    fn lookup(&self, name: &str) -> Option<&Value> {
        self.docs.iter().find_map(|d| d.pointer(&format!("/components/schemas/{}", name.replace('/', "~1"))))
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
            match r.strip_prefix("#/components/schemas/").and_then(|n| self.lookup(n)) {
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
            if kubelet_lite::time::Time::parse_rfc3339(t).is_none() {
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
