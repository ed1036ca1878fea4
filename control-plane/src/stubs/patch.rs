//! Stand-in patch functions with the signatures of `patch.rs` (merge patches only).

use serde_json::Value;
use std::fmt;

/// Why a patch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch is not of the expected shape.
    Malformed(String),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Malformed(m) => write!(f, "{m}"),
        }
    }
}

/// RFC 6902 (not available in this build).
pub fn apply_json_patch(_doc: &Value, _patch: &Value) -> Result<Value, PatchError> {
    Err(PatchError::Malformed("json patches are not supported".into()))
}

/// RFC 7386.
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Value {
    let Some(p) = patch.as_object() else { return patch.clone() };
    let mut out = doc.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let cur = out.get(k).cloned().unwrap_or(Value::Null);
            out.insert(k.clone(), apply_merge_patch(&cur, v));
        }
    }
    Value::Object(out)
}

/// Strategic merge, approximated by a merge patch.
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    _keys: &dyn Fn(&[&str]) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    Ok(apply_merge_patch(doc, patch))
}

/// Merge keys per kind (none in this build).
pub fn k8s_merge_keys(_kind: &str) -> impl Fn(&[&str]) -> Option<&'static str> {
    |_: &[&str]| None
}
