//! Writing members of JSON objects without `value["key"] = ...`, which panics when the value
//! is neither an object nor null. The objects written here come from clients, the store or
//! patches, so a non-object is an error to report, not a crash.

use serde_json::Value;
use std::fmt;

/// A member was to be written into something that is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnObject {
    /// Where the non-object is, as dotted member names (`""` for the value itself).
    pub path: String,
}

impl fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str("the object is not a JSON object")
        } else {
            write!(f, "{} is not a JSON object", self.path)
        }
    }
}

/// Sets the member at `path` (`["metadata", "namespace"]`) to `value`. As indexing does, a
/// missing or null object on the way becomes an empty object; any other non-object is an error
/// and leaves `v` unchanged from that point.
pub fn set_at(v: &mut Value, path: &[&str], value: Value) -> Result<(), NotAnObject> {
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut at = v;
    for (depth, key) in parents.iter().enumerate() {
        at = object(at, &path[..depth])?.entry(*key).or_insert(Value::Null);
    }
    object(at, parents)?.insert((*last).to_string(), value);
    Ok(())
}

/// Sets the member `key` of `v` to `value`; see [`set_at`].
pub fn set(v: &mut Value, key: &str, value: Value) -> Result<(), NotAnObject> {
    set_at(v, &[key], value)
}

/// `v` as an object (null becomes an empty one), or where it is not one.
fn object<'a>(
    v: &'a mut Value,
    path: &[&str],
) -> Result<&'a mut serde_json::Map<String, Value>, NotAnObject> {
    if v.is_null() {
        *v = Value::Object(serde_json::Map::new());
    }
    v.as_object_mut().ok_or_else(|| NotAnObject { path: path.join(".") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_members_like_indexing_does() {
        let mut v = json!({"metadata": {"name": "a"}});
        set_at(&mut v, &["metadata", "namespace"], json!("ns")).unwrap();
        set(&mut v, "kind", json!("Pod")).unwrap();
        set_at(&mut v, &["status", "qosClass"], json!("BestEffort")).unwrap();
        assert_eq!(
            v,
            json!({"kind": "Pod", "metadata": {"name": "a", "namespace": "ns"}, "status": {"qosClass": "BestEffort"}})
        );
        let mut null = Value::Null;
        set(&mut null, "a", json!(1)).unwrap();
        assert_eq!(null, json!({"a": 1}));
    }

    #[test]
    fn non_objects_are_errors_not_panics() {
        for bad in [json!([1, 2]), json!("text"), json!(3), json!(true)] {
            let mut v = bad.clone();
            assert_eq!(set(&mut v, "kind", json!("Pod")), Err(NotAnObject { path: String::new() }));
            assert_eq!(v, bad);
            let mut nested = json!({"metadata": bad.clone()});
            let e = set_at(&mut nested, &["metadata", "namespace"], json!("ns")).unwrap_err();
            assert_eq!(e.to_string(), "metadata is not a JSON object");
        }
    }
}
