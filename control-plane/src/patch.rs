//! The three PATCH content types an apiserver accepts, as pure functions over JSON values:
//!
//! - `application/json-patch+json`: RFC 6902 ([`apply_json_patch`]).
//! - `application/merge-patch+json`: RFC 7386 ([`apply_merge_patch`]).
//! - `application/strategic-merge-patch+json`: Kubernetes strategic merge patch
//!   ([`apply_strategic_merge_patch`]), with the patch metadata of a kind from [`k8s_merge_keys`].
//!
//! Strategic merge semantics (apimachinery `pkg/util/strategicpatch`, applied with parallel-list merging):
//! maps merge key by key and `null` deletes a key; a list whose field has patch strategy `merge` merges
//! element by element on its patch merge key (lists of scalars merge as sets); any other list is replaced.
//! Directives: `"$patch": "replace"` in a map replaces the map, `"$patch": "delete"` deletes it, and
//! `"$patch": "merge"` is an explicit ordinary merge; a list element `{"$patch": "replace"}` replaces the
//! whole list with the other patch elements, `{"$patch": "delete", <key>: v}` removes the element with that
//! key; `"$setElementOrder/<list>": [...]` fixes the order of the merged list; `"$retainKeys": [...]` drops
//! every key of the map not named; `"$deleteFromPrimitiveList/<list>": [...]` removes scalars from a list.
//! Element order after a list merge: elements named by the patch (or by `$setElementOrder`) follow that
//! order, elements only on the server keep their place relative to them.
//!
//! The patch body is client input: every malformation is a [`PatchError`], nothing panics.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// A JSON patch must be an array of operations.
    JsonPatchNotArray,
    /// Operation `index` is not an object or lacks a required member.
    MissingMember { index: usize, member: &'static str },
    /// Operation `index` has an `op` other than add/remove/replace/move/copy/test.
    UnknownOperation { index: usize, op: String },
    /// A JSON pointer does not start with `/` or has a bad `~` escape.
    InvalidPointer(String),
    /// The location a pointer names does not exist.
    PathNotFound(String),
    /// An array index is not a number, has leading zeros, or is out of range.
    InvalidIndex(String),
    /// A `test` operation found a different value.
    TestFailed(String),
    /// `move` from a location into one of its own children.
    MoveIntoChild { from: String, path: String },
    /// A strategic merge patch (or a map inside it) must be a JSON object.
    NotAnObject(String),
    /// A `$patch` directive with an unknown value.
    BadDirective(String),
    /// A list element in a merge-by-key list lacks the merge key.
    MissingMergeKey { list: String, key: String },
    /// A merge-by-key list has an element that is not an object.
    ListElementNotObject(String),
    /// A `$setElementOrder`, `$retainKeys` or `$deleteFromPrimitiveList` value is not a list.
    BadDirectiveList(String),
    /// The patch has a key that its `$retainKeys` list does not name.
    KeyNotRetained(String),
    /// A map with a `$patch` directive patches a field whose value is a scalar or a list (kube
    /// cannot decode the result: 422).
    DirectiveOnScalar(String),
    /// A JSON patch has more operations than [`MAX_JSON_PATCH_OPERATIONS`] (413, as
    /// kube-apiserver answers).
    TooManyOperations { count: usize, limit: usize },
    /// The `copy` operations of a JSON patch would add more than the limit (422).
    CopyTooLarge { accumulated: usize, limit: usize },
    /// An operation would nest the document deeper than the limit (422).
    TooDeep { path: String, limit: usize },
    /// The operations would move more array elements (or walk more values) than the limit.
    TooMuchWork { limit: usize },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::JsonPatchNotArray => write!(f, "json patch must be an array of operations"),
            Self::MissingMember { index, member } => {
                write!(f, "json patch operation {index}: missing member \"{member}\"")
            }
            Self::UnknownOperation { index, op } => {
                write!(f, "json patch operation {index}: unexpected kind of operation \"{op}\"")
            }
            Self::InvalidPointer(p) => write!(f, "invalid JSON pointer \"{p}\""),
            Self::PathNotFound(p) => write!(f, "doc is missing path: \"{p}\""),
            Self::InvalidIndex(p) => write!(f, "invalid array index in \"{p}\""),
            Self::TestFailed(p) => write!(f, "testing value {p} failed"),
            Self::MoveIntoChild { from, path } => {
                write!(f, "cannot move \"{from}\" into its own child \"{path}\"")
            }
            Self::NotAnObject(p) => write!(f, "strategic merge patch at \"{p}\" must be a JSON object"),
            Self::BadDirective(d) => write!(f, "unknown patch type: {d}"),
            Self::MissingMergeKey { list, key } => {
                write!(f, "map in list \"{list}\" does not contain declared merge key: {key}")
            }
            Self::ListElementNotObject(l) => {
                write!(f, "list \"{l}\" merges by key but has a non-object element")
            }
            Self::BadDirectiveList(k) => write!(f, "invalid patch: \"{k}\" must be a list"),
            Self::KeyNotRetained(k) => write!(f, "invalid patch: key \"{k}\" is not in the $retainKeys list"),
            Self::DirectiveOnScalar(p) => {
                write!(f, "a \"$patch\" directive applies to a map, but \"{p}\" is not one")
            }
            Self::TooManyOperations { count, limit } => {
                write!(f, "The allowed maximum operations in a JSON patch is {limit}, got {count}")
            }
            Self::CopyTooLarge { accumulated, limit } => write!(
                f,
                "Unable to complete the copy, the accumulated size increase of copy is {accumulated}, exceeding the limit {limit}"
            ),
            Self::TooDeep { path, limit } => {
                write!(f, "the value at \"{path}\" would nest the object deeper than {limit} levels")
            }
            Self::TooMuchWork { limit } => {
                write!(f, "the patch moves or walks more than {limit} values; split it into smaller patches")
            }
        }
    }
}

impl std::error::Error for PatchError {}

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON patch
// ---------------------------------------------------------------------------------------------

/// Splits a JSON pointer (RFC 6901) into unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| PatchError::InvalidPointer(pointer.into()))?;
    rest.split('/')
        .map(|tok| {
            let mut out = String::new();
            let mut chars = tok.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(PatchError::InvalidPointer(pointer.into())),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// An existing array index (no leading zeros, no sign).
fn array_index(tok: &str, len: usize, pointer: &str) -> Result<usize, PatchError> {
    let bad = || PatchError::InvalidIndex(pointer.into());
    if tok.is_empty() || (tok.len() > 1 && tok.starts_with('0')) || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let i: usize = tok.parse().map_err(|_| bad())?;
    if i < len {
        Ok(i)
    } else {
        Err(bad())
    }
}

fn lookup<'a>(doc: &'a Value, toks: &[String], pointer: &str) -> Result<&'a Value, PatchError> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => a.get(array_index(t, a.len(), pointer)?),
            _ => None,
        }
        .ok_or_else(|| PatchError::PathNotFound(pointer.into()))?;
    }
    Ok(cur)
}

fn lookup_mut<'a>(doc: &'a mut Value, toks: &[String], pointer: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => {
                let len = a.len();
                a.get_mut(array_index(t, len, pointer)?)
            }
            _ => None,
        }
        .ok_or_else(|| PatchError::PathNotFound(pointer.into()))?;
    }
    Ok(cur)
}

/// kube-apiserver's `maxJSONPatchOperations` (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// kube-apiserver's default `JSONPatchMaxCopyBytes` (3 MiB), which it gives to
/// evanphx/json-patch as `AccumulatedCopySizeLimit`: the JSON bytes all `copy` operations of one
/// patch may add.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;
/// The array elements one patch may shift (inserting or removing in the middle of an array) plus
/// the values it walks to check depths: a bound on the work a patch body buys.
pub const MAX_JSON_PATCH_WORK: usize = 16 * 1024 * 1024;

/// What one JSON patch may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonPatchLimits {
    /// The most operations.
    pub max_operations: usize,
    /// The most JSON bytes the `copy` operations may add, counted before anything is copied.
    pub max_copy_bytes: usize,
    /// The deepest the document may become (objects and arrays, `{}` is 1).
    pub max_depth: usize,
    /// The most array elements shifted plus values walked.
    pub max_work: usize,
}

impl Default for JsonPatchLimits {
    fn default() -> Self {
        JsonPatchLimits {
            max_operations: MAX_JSON_PATCH_OPERATIONS,
            max_copy_bytes: MAX_JSON_PATCH_COPY_BYTES,
            max_depth: crate::store::MAX_DEPTH,
            max_work: MAX_JSON_PATCH_WORK,
        }
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `v` as compact JSON, computed without building the text.
pub fn json_len(v: &Value) -> usize {
    let mut n = ByteCount(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// The work counter of one patch.
struct Budget<'l> {
    limits: &'l JsonPatchLimits,
    work: usize,
    copied: usize,
}

impl Budget<'_> {
    fn spend(&mut self, n: usize) -> Result<(), PatchError> {
        self.work = self.work.saturating_add(n);
        if self.work > self.limits.max_work {
            return Err(PatchError::TooMuchWork { limit: self.limits.max_work });
        }
        Ok(())
    }

    /// Checks that `value` placed `at` levels below the root keeps the document within the
    /// depth limit; walking the value is work.
    fn check_depth(&mut self, value: &Value, at: usize, pointer: &str) -> Result<(), PatchError> {
        let max = self.limits.max_depth;
        let too_deep = || PatchError::TooDeep { path: pointer.into(), limit: max };
        let mut stack = vec![(value, at + 1)];
        while let Some((v, d)) = stack.pop() {
            self.spend(1)?;
            match v {
                Value::Array(a) => {
                    if d > max {
                        return Err(too_deep());
                    }
                    stack.extend(a.iter().map(|x| (x, d + 1)));
                }
                Value::Object(m) => {
                    if d > max {
                        return Err(too_deep());
                    }
                    stack.extend(m.values().map(|x| (x, d + 1)));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn op_add(doc: &mut Value, pointer: &str, value: Value, budget: &mut Budget) -> Result<(), PatchError> {
    let toks = parse_pointer(pointer)?;
    budget.check_depth(&value, toks.len(), pointer)?;
    let Some((last, parent)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match lookup_mut(doc, parent, pointer)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" || *last == a.len().to_string() {
                a.push(value);
            } else {
                let i = array_index(last, a.len(), pointer)?;
                budget.spend(a.len() - i)?;
                a.insert(i, value);
            }
            Ok(())
        }
        _ => Err(PatchError::PathNotFound(pointer.into())),
    }
}

fn op_remove(doc: &mut Value, pointer: &str, budget: &mut Budget) -> Result<Value, PatchError> {
    let toks = parse_pointer(pointer)?;
    let Some((last, parent)) = toks.split_last() else {
        return Ok(std::mem::replace(doc, Value::Null));
    };
    match lookup_mut(doc, parent, pointer)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| PatchError::PathNotFound(pointer.into())),
        Value::Array(a) => {
            let i = array_index(last, a.len(), pointer)?;
            budget.spend(a.len() - i)?;
            Ok(a.remove(i))
        }
        _ => Err(PatchError::PathNotFound(pointer.into())),
    }
}

fn member<'a>(op: &'a Map<String, Value>, index: usize, name: &'static str) -> Result<&'a Value, PatchError> {
    op.get(name).ok_or(PatchError::MissingMember { index, member: name })
}

fn member_str<'a>(
    op: &'a Map<String, Value>,
    index: usize,
    name: &'static str,
) -> Result<&'a str, PatchError> {
    member(op, index, name)?.as_str().ok_or(PatchError::MissingMember { index, member: name })
}

/// Applies an RFC 6902 JSON patch with the default [`JsonPatchLimits`]; the document is
/// unchanged unless every operation succeeds.
pub fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    apply_json_patch_with(doc, patch, &JsonPatchLimits::default())
}

/// Applies an RFC 6902 JSON patch within `limits`: the number of operations is checked before
/// any is applied, the size of each `copy` before its value is cloned, and the depth of every
/// value before it is placed, so a small patch cannot make a huge or deep document.
pub fn apply_json_patch_with(
    doc: &Value,
    patch: &Value,
    limits: &JsonPatchLimits,
) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or(PatchError::JsonPatchNotArray)?;
    if ops.len() > limits.max_operations {
        return Err(PatchError::TooManyOperations { count: ops.len(), limit: limits.max_operations });
    }
    let mut budget = Budget { limits, work: 0, copied: 0 };
    let mut out = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        let op = op.as_object().ok_or(PatchError::MissingMember { index, member: "op" })?;
        let kind = member_str(op, index, "op")?;
        let path = member_str(op, index, "path")?;
        match kind {
            "add" => op_add(&mut out, path, member(op, index, "value")?.clone(), &mut budget)?,
            "remove" => {
                op_remove(&mut out, path, &mut budget)?;
            }
            "replace" => {
                let toks = parse_pointer(path)?;
                let value = member(op, index, "value")?;
                budget.check_depth(value, toks.len(), path)?;
                *lookup_mut(&mut out, &toks, path)? = value.clone();
            }
            "move" => {
                let from = member_str(op, index, "from")?;
                if from != path && path.starts_with(from) && path.as_bytes().get(from.len()) == Some(&b'/') {
                    return Err(PatchError::MoveIntoChild { from: from.into(), path: path.into() });
                }
                let v = op_remove(&mut out, from, &mut budget)?;
                op_add(&mut out, path, v, &mut budget)?;
            }
            "copy" => {
                let from = member_str(op, index, "from")?;
                let source = lookup(&out, &parse_pointer(from)?, from)?;
                budget.copied = budget.copied.saturating_add(json_len(source));
                if budget.copied > limits.max_copy_bytes {
                    return Err(PatchError::CopyTooLarge {
                        accumulated: budget.copied,
                        limit: limits.max_copy_bytes,
                    });
                }
                let v = source.clone();
                op_add(&mut out, path, v, &mut budget)?;
            }
            "test" => {
                let want = member(op, index, "value")?;
                if lookup(&out, &parse_pointer(path)?, path)? != want {
                    return Err(PatchError::TestFailed(path.into()));
                }
            }
            other => return Err(PatchError::UnknownOperation { index, op: other.into() }),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// RFC 7386 JSON merge patch
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 7386 merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut target = match doc {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    target.remove(k);
                } else {
                    let merged = apply_merge_patch(target.get(k).unwrap_or(&Value::Null), v);
                    target.insert(k.clone(), merged);
                }
            }
            Value::Object(target)
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";

/// How a list field is patched: what the merge-key function says for its path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListStrategy<'k> {
    /// Replaced by the patch's list.
    Replace,
    /// A set of scalars: union, keeping the first of duplicates.
    Scalars,
    /// Objects merged by this key.
    ByKey(&'k str),
}

fn strategy(keys: &dyn Fn(&[&str]) -> Option<&'static str>, path: &[String]) -> ListStrategy<'static> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match keys(&p) {
        None => ListStrategy::Replace,
        Some("") => ListStrategy::Scalars,
        Some(k) => ListStrategy::ByKey(k),
    }
}

struct Smp<'a> {
    keys: &'a dyn Fn(&[&str]) -> Option<&'static str>,
}

/// Outcome of merging a map: a new map, or `$patch: delete`.
enum MapResult {
    Map(Map<String, Value>),
    Delete,
}

impl MapResult {
    /// The value to store under the map's key; `None` removes the key.
    fn into_value(self) -> Option<Value> {
        match self {
            Self::Map(m) => Some(Value::Object(m)),
            Self::Delete => None,
        }
    }
}

fn joined(path: &[String]) -> String {
    path.join(".")
}

/// The identity of a list element as a hashable string: the JSON of its merge-key value, or of
/// the element itself for scalars; `None` when an object lacks the key.
fn identity(v: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(k) => v.get(k).map(Value::to_string),
        None => Some(v.to_string()),
    }
}

/// The position of each identity's first occurrence in `list`.
fn positions(list: &[Value], key: Option<&str>) -> HashMap<String, usize> {
    let mut out = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        if let Some(id) = identity(v, key) {
            out.entry(id).or_insert(i);
        }
    }
    out
}

/// Orders a merged list: `patch_items` by `order`, `server_only` by `server_order`, then interleaves them
/// so that server-only items keep their place relative to patch items that also were on the server.
/// The orders are maps from identity to position, so this is O(n log n).
fn normalize_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    order: &HashMap<String, usize>,
    server_order: &HashMap<String, usize>,
    key: Option<&str>,
) -> Vec<Value> {
    let pos = |map: &HashMap<String, usize>, v: &Value| identity(v, key).and_then(|id| map.get(&id).copied());
    let sorted = |items: Vec<Value>, map: &HashMap<String, usize>| {
        let mut keyed: Vec<(usize, Option<usize>, Value)> = items
            .into_iter()
            .map(|v| (pos(map, &v).unwrap_or(usize::MAX), pos(server_order, &v), v))
            .collect();
        keyed.sort_by_key(|(p, _, _)| *p);
        keyed
    };
    let right = sorted(patch_items, order);
    let left = sorted(server_only, server_order);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l, _)), Some((_, r, _))) => match (l, r) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|(_, _, v)| v));
    }
    out
}

/// Splits `merged` into (items whose identity appears in `by`, the rest).
fn partition(merged: Vec<Value>, by: &HashMap<String, usize>, key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged.into_iter().partition(|v| identity(v, key).is_some_and(|id| by.contains_key(&id)))
}

impl Smp<'_> {
    fn merge_map(
        &self,
        mut orig: Map<String, Value>,
        patch: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<MapResult, PatchError> {
        if let Some(d) = patch.get(DIRECTIVE) {
            match d.as_str() {
                Some("replace") => {
                    let mut rest = patch.clone();
                    rest.remove(DIRECTIVE);
                    return self.merge_map(Map::new(), &rest, path);
                }
                Some("delete") => return Ok(MapResult::Delete),
                Some("merge") => {}
                _ => return Err(PatchError::BadDirective(d.to_string())),
            }
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let list = retain.as_array().ok_or_else(|| PatchError::BadDirectiveList(RETAIN_KEYS.into()))?;
            let names: HashSet<&str> = list.iter().filter_map(Value::as_str).collect();
            if list.iter().any(|v| !v.is_string()) {
                return Err(PatchError::BadDirectiveList(RETAIN_KEYS.into()));
            }
            for (k, v) in patch {
                if !v.is_null() && !k.starts_with('$') && !names.contains(&k.as_str()) {
                    return Err(PatchError::KeyNotRetained(k.clone()));
                }
            }
            orig.retain(|k, _| names.contains(&k.as_str()));
        }

        let mut handled: HashSet<&str> = HashSet::new();

        // Scalars to remove from primitive lists go first, so a list both trimmed and extended works.
        for (k, v) in patch {
            let Some(field) = k.strip_prefix(DELETE_PRIMITIVE_PREFIX) else { continue };
            let gone = v.as_array().ok_or_else(|| PatchError::BadDirectiveList(k.clone()))?;
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                let gone: HashSet<String> = gone.iter().map(Value::to_string).collect();
                list.retain(|e| !gone.contains(&e.to_string()));
            }
        }

        for (k, v) in patch {
            let Some(field) = k.strip_prefix(SET_ORDER_PREFIX) else { continue };
            let order = v.as_array().ok_or_else(|| PatchError::BadDirectiveList(k.clone()))?;
            path.push(field.to_string());
            let strat = strategy(self.keys, path);
            let key = match strat {
                ListStrategy::ByKey(k) => Some(k),
                _ => None,
            };
            let orig_list = match orig.get(field) {
                Some(Value::Array(a)) => Some(a.clone()),
                Some(_) => return Err(PatchError::BadDirectiveList(k.clone())),
                None => None,
            };
            let patch_list = match patch.get(field) {
                Some(Value::Array(a)) => Some(a),
                Some(Value::Null) | None => None,
                Some(_) => return Err(PatchError::BadDirectiveList(k.clone())),
            };
            let merged = match (&orig_list, patch_list) {
                (Some(o), None) => o.clone(),
                (None, Some(p)) => self.merge_list(Vec::new(), p, strat, path)?,
                (Some(o), Some(p)) => self.merge_list(o.clone(), p, strat, path)?,
                (None, None) => {
                    path.pop();
                    continue;
                }
            };
            path.pop();
            let order = positions(order, key);
            let (in_order, server_only) = partition(merged, &order, key);
            let server_order = orig_list.as_deref().map(|l| positions(l, key)).unwrap_or_default();
            let ordered = normalize_order(in_order, server_only, &order, &server_order, key);
            orig.insert(field.to_string(), Value::Array(ordered));
            if patch_list.is_some() {
                handled.insert(field);
            }
        }

        for (k, v) in patch {
            if k == DIRECTIVE
                || k == RETAIN_KEYS
                || k.starts_with(SET_ORDER_PREFIX)
                || k.starts_with(DELETE_PRIMITIVE_PREFIX)
                || handled.contains(&k.as_str())
            {
                continue;
            }
            if v.is_null() {
                orig.remove(k);
                continue;
            }
            path.push(k.clone());
            let merged = match (orig.remove(k), v) {
                (Some(Value::Object(o)), Value::Object(p)) => self.merge_map(o, p, path)?.into_value(),
                (Some(o), Value::Object(p)) if !o.is_null() && p.contains_key(DIRECTIVE) => {
                    return Err(PatchError::DirectiveOnScalar(joined(path)));
                }
                (_, Value::Object(p)) => self.merge_map(Map::new(), p, path)?.into_value(),
                (Some(Value::Array(o)), Value::Array(p)) => {
                    Some(Value::Array(self.merge_list(o, p, strategy(self.keys, path), path)?))
                }
                (_, Value::Array(p)) => {
                    Some(Value::Array(self.merge_list(Vec::new(), p, strategy(self.keys, path), path)?))
                }
                (_, other) => Some(other.clone()),
            };
            path.pop();
            if let Some(value) = merged {
                orig.insert(k.clone(), value);
            }
        }
        Ok(MapResult::Map(orig))
    }

    fn merge_list(
        &self,
        orig: Vec<Value>,
        patch: &[Value],
        strat: ListStrategy<'_>,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        match strat {
            ListStrategy::Replace => Ok(patch.to_vec()),
            ListStrategy::Scalars => {
                // A set union keeping the first of duplicates, with hashed identities: linear.
                let mut seen = HashSet::with_capacity(orig.len() + patch.len());
                let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + patch.len());
                for v in orig.iter().chain(patch) {
                    if seen.insert(v.to_string()) {
                        merged.push(v.clone());
                    }
                }
                let order = positions(patch, None);
                let server_order = positions(&orig, None);
                let (p, s) = partition(merged, &order, None);
                Ok(normalize_order(p, s, &order, &server_order, None))
            }
            ListStrategy::ByKey(key) => {
                let list_name = joined(path);
                let missing_key = || PatchError::MissingMergeKey { list: list_name.clone(), key: key.into() };
                let mut plain: Vec<&Map<String, Value>> = Vec::new();
                let mut deleted: HashSet<String> = HashSet::new();
                let mut replace = false;
                for el in patch {
                    let m = el.as_object().ok_or_else(|| PatchError::ListElementNotObject(joined(path)))?;
                    match m.get(DIRECTIVE) {
                        None => plain.push(m),
                        Some(d) => match d.as_str() {
                            Some("delete") => {
                                deleted.insert(m.get(key).ok_or_else(missing_key)?.to_string());
                            }
                            Some("replace") => replace = true,
                            Some("merge") => {}
                            _ => return Err(PatchError::BadDirective(d.to_string())),
                        },
                    }
                }
                let mut slots: Vec<Option<Value>> = if replace {
                    Vec::new()
                } else {
                    orig.into_iter()
                        .filter(|e| e.get(key).is_none_or(|id| !deleted.contains(&id.to_string())))
                        .map(Some)
                        .collect()
                };
                // Where each key's first element is, and the server's order, before the merge.
                let mut index: HashMap<String, usize> = HashMap::with_capacity(slots.len());
                for (i, e) in slots.iter().enumerate() {
                    if let Some(id) = e.as_ref().and_then(|e| e.get(key)) {
                        index.entry(id.to_string()).or_insert(i);
                    }
                }
                let server_order = index.clone();
                for el in &plain {
                    let id = el.get(key).ok_or_else(missing_key)?.to_string();
                    match index.get(&id).copied() {
                        Some(i) => {
                            let base = match slots.get_mut(i).and_then(Option::take) {
                                Some(Value::Object(o)) => o,
                                _ => Map::new(),
                            };
                            match self.merge_map(base, el, path)? {
                                MapResult::Map(m) => {
                                    if let Some(slot) = slots.get_mut(i) {
                                        *slot = Some(Value::Object(m));
                                    }
                                }
                                MapResult::Delete => {
                                    index.remove(&id);
                                }
                            }
                        }
                        None => {
                            if let MapResult::Map(m) = self.merge_map(Map::new(), el, path)? {
                                index.insert(id, slots.len());
                                slots.push(Some(Value::Object(m)));
                            }
                        }
                    }
                }
                let mut order: HashMap<String, usize> = HashMap::with_capacity(plain.len());
                for (i, el) in plain.iter().enumerate() {
                    if let Some(id) = el.get(key) {
                        order.entry(id.to_string()).or_insert(i);
                    }
                }
                let merged: Vec<Value> = slots.into_iter().flatten().collect();
                let (p, s) = partition(merged, &order, Some(key));
                Ok(normalize_order(p, s, &order, &server_order, Some(key)))
            }
        }
    }
}

/// Applies a strategic merge patch.
///
/// `keys` gives the patch metadata of list fields: called with the path of field names from the
/// object's root (list elements add no segment, e.g. `["spec", "containers", "ports"]`), it returns
/// `Some(key)` for a list merged by that key, `Some("")` for a list of scalars merged as a set, and
/// `None` for a list the patch replaces. [`k8s_merge_keys`] gives it for the built-in kinds.
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    keys: &dyn Fn(&[&str]) -> Option<&'static str>,
) -> Result<Value, PatchError> {
    let p = patch.as_object().ok_or_else(|| PatchError::NotAnObject(String::new()))?;
    let base = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let smp = Smp { keys };
    match smp.merge_map(base, p, &mut Vec::new())? {
        MapResult::Map(m) => Ok(Value::Object(m)),
        MapResult::Delete => Ok(Value::Object(Map::new())),
    }
}

/// Patch metadata of a container (`containers`, `initContainers`, `ephemeralContainers` elements).
fn container_keys(field: &str) -> Option<&'static str> {
    match field {
        "env" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        _ => None,
    }
}

/// Patch metadata of an `ObjectMeta` at any depth.
fn meta_keys(field: &str) -> Option<&'static str> {
    match field {
        "finalizers" => Some(""),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// The strategic-merge metadata (patch strategy `merge` and patch merge key) of the list fields of
/// `kind` (Pod, Node, Namespace, Lease, Event), as declared by the Kubernetes v1.32 API types. Lists
/// not named here (tolerations, containerStatuses, args, command, images, ...) are atomic and replaced.
pub fn k8s_merge_keys(kind: &str) -> impl Fn(&[&str]) -> Option<&'static str> {
    let kind = kind.to_string();
    move |path: &[&str]| -> Option<&'static str> {
        if let [.., "metadata", field] = path {
            return meta_keys(field);
        }
        match (kind.as_str(), path) {
            ("Pod", ["spec", list]) => match *list {
                "containers" | "initContainers" | "ephemeralContainers" => Some("name"),
                "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims" => Some("name"),
                "hostAliases" => Some("ip"),
                "topologySpreadConstraints" => Some("topologyKey"),
                _ => None,
            },
            ("Pod", ["spec", "containers" | "initContainers" | "ephemeralContainers", field]) => {
                container_keys(field)
            }
            ("Pod", ["status", list]) => match *list {
                "conditions" => Some("type"),
                "podIPs" | "hostIPs" => Some("ip"),
                "resourceClaimStatuses" => Some("name"),
                _ => None,
            },
            (
                "Pod",
                ["status", "containerStatuses" | "initContainerStatuses" | "ephemeralContainerStatuses", field],
            ) => match *field {
                "allocatedResourcesStatus" => Some("name"),
                "volumeMounts" => Some("mountPath"),
                _ => None,
            },
            ("Node", ["spec", "podCIDRs"]) => Some(""),
            ("Node", ["status", "addresses" | "conditions"]) => Some("type"),
            ("Namespace", ["status", "conditions"]) => Some("type"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- RFC 6902 ---

    #[test]
    fn json_patch_rfc6902_examples() {
        let doc = json!({"foo": ["bar", "baz"], "q": {"a": 1}});
        let out = apply_json_patch(
            &doc,
            &json!([
                {"op": "add", "path": "/foo/1", "value": "qux"},
                {"op": "add", "path": "/foo/-", "value": "end"},
                {"op": "remove", "path": "/q/a"},
                {"op": "replace", "path": "/foo/0", "value": "BAR"},
                {"op": "copy", "from": "/foo/0", "path": "/copied"},
                {"op": "move", "from": "/foo/3", "path": "/q/moved"},
                {"op": "test", "path": "/q/moved", "value": "end"},
                {"op": "add", "path": "/a~1b", "value": {"c~d": 1}},
                {"op": "test", "path": "/a~1b/c~0d", "value": 1}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"foo": ["BAR", "qux", "baz"], "q": {"moved": "end"}, "copied": "BAR", "a/b": {"c~d": 1}})
        );
    }

    #[test]
    fn json_patch_errors_leave_no_partial_result() {
        let doc = json!({"a": [1, 2]});
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "test", "path": "/a/0", "value": 2}])),
            Err(PatchError::TestFailed("/a/0".into()))
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "remove", "path": "/b"}])),
            Err(PatchError::PathNotFound("/b".into()))
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "replace", "path": "/a/01", "value": 0}])),
            Err(PatchError::InvalidIndex("/a/01".into()))
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "add", "path": "/a/5", "value": 0}])),
            Err(PatchError::InvalidIndex("/a/5".into()))
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "add", "path": "a", "value": 0}])),
            Err(PatchError::InvalidPointer("a".into()))
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "frob", "path": "/a"}])),
            Err(PatchError::UnknownOperation { index: 0, op: "frob".into() })
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "add", "path": "/x"}])),
            Err(PatchError::MissingMember { index: 0, member: "value" })
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "move", "from": "/a", "path": "/a/0"}])),
            Err(PatchError::MoveIntoChild { from: "/a".into(), path: "/a/0".into() })
        );
        assert_eq!(apply_json_patch(&doc, &json!({"op": "add"})), Err(PatchError::JsonPatchNotArray));
        // Appending at index == len is allowed; whole-document replace too.
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "add", "path": "/a/2", "value": 3}])).unwrap(),
            json!({"a": [1, 2, 3]})
        );
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "replace", "path": "", "value": 7}])).unwrap(),
            json!(7)
        );
    }

    /// Issue 13, finding 1: 30 chained copies of `/spec` into itself double the object each
    /// time; the copies are sized before anything is cloned and stop at 3 MiB.
    #[test]
    fn chained_copies_stop_at_the_copy_limit_before_cloning() {
        let doc = json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "renewTime": "x".repeat(900)}});
        let ops: Vec<Value> =
            (0..30).map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/a{i}")})).collect();
        let err = apply_json_patch(&doc, &Value::Array(ops)).unwrap_err();
        let PatchError::CopyTooLarge { accumulated, limit } = err else { panic!("{err:?}") };
        assert_eq!(limit, MAX_JSON_PATCH_COPY_BYTES);
        // Refused at the copy that crosses the limit: the sum of the copies before it is within.
        assert!(accumulated > limit && accumulated < 3 * limit, "{accumulated}");
        // Within the limit, copies work.
        let ok =
            apply_json_patch(&doc, &json!([{"op": "copy", "from": "/spec", "path": "/spec/a"}])).unwrap();
        assert_eq!(ok["spec"]["a"]["holderIdentity"], "n1");
    }

    #[test]
    fn operations_depth_and_work_are_bounded() {
        let doc = json!({"a": []});
        let many = Value::Array(vec![
            json!({"op": "test", "path": "/a", "value": []});
            MAX_JSON_PATCH_OPERATIONS + 1
        ]);
        assert_eq!(
            apply_json_patch(&doc, &many),
            Err(PatchError::TooManyOperations {
                count: MAX_JSON_PATCH_OPERATIONS + 1,
                limit: MAX_JSON_PATCH_OPERATIONS
            })
        );
        let enough =
            Value::Array(vec![json!({"op": "test", "path": "/a", "value": []}); MAX_JSON_PATCH_OPERATIONS]);
        assert!(apply_json_patch(&doc, &enough).is_ok());
        // One level at a time, past the depth limit: refused at the op that crosses it.
        let max = crate::store::MAX_DEPTH;
        let mut ops = Vec::new();
        let mut path = String::new();
        for _ in 0..max + 5 {
            path.push_str("/x");
            ops.push(json!({"op": "add", "path": path, "value": {}}));
        }
        let err = apply_json_patch(&json!({}), &Value::Array(ops.clone())).unwrap_err();
        assert!(matches!(err, PatchError::TooDeep { limit, .. } if limit == max), "{err:?}");
        ops.truncate(max - 1);
        assert!(apply_json_patch(&json!({}), &Value::Array(ops)).is_ok());
        // Inserting at the front of a long array shifts it every time: bounded work.
        let long = json!({"a": vec![0; 100_000]});
        let front =
            Value::Array(vec![json!({"op": "add", "path": "/a/0", "value": 1}); MAX_JSON_PATCH_OPERATIONS]);
        assert_eq!(
            apply_json_patch(&long, &front),
            Err(PatchError::TooMuchWork { limit: MAX_JSON_PATCH_WORK })
        );
    }

    /// Issue 13, finding 2: 32000 finalizers took 7.4 s (quadratic). The merges of primitive
    /// lists, `$deleteFromPrimitiveList`, `$setElementOrder` and merge-by-key lists are now
    /// linear up to a sort: lists of 20000 to 30000 elements take about a second in a debug
    /// build, well under the generous bound below (the old code compared every pair, in
    /// `sort_by_key` with a linear search per key, and took minutes).
    #[test]
    fn long_lists_merge_in_near_linear_time() {
        let n = 20_000;
        let fin = |r: std::ops::Range<usize>| -> Vec<Value> { r.map(|i| json!(format!("f{i}"))).collect() };
        let owners = |r: std::ops::Range<usize>| -> Vec<Value> {
            r.map(|i| json!({"uid": format!("u{i}"), "name": format!("o{i}")})).collect()
        };
        let doc = json!({"metadata": {"finalizers": fin(0..n), "ownerReferences": owners(0..n)}});
        let order: Vec<Value> = (0..n + n / 2).rev().map(|i| json!({"uid": format!("u{i}")})).collect();
        let patch = json!({"metadata": {
            "finalizers": fin(n / 2..n + n / 2),
            "$deleteFromPrimitiveList/finalizers": fin(0..n / 4),
            "ownerReferences": owners(n / 2..n + n / 2),
            "$setElementOrder/ownerReferences": order}});
        let start = std::time::Instant::now();
        let out = smp("Pod", doc, patch).unwrap();
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        let f = out["metadata"]["finalizers"].as_array().unwrap();
        assert_eq!(f.len(), n + n / 2 - n / 4);
        assert!(!f.contains(&json!("f0")) && f.contains(&json!(format!("f{}", n / 4))));
        let o = out["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(o.len(), n + n / 2);
        assert_eq!(o[0]["uid"], format!("u{}", n + n / 2 - 1));
        assert_eq!(o[o.len() - 1]["uid"], "u0");
    }

    // --- RFC 7386 ---

    #[test]
    fn merge_patch_rfc7386_appendix() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(apply_merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
    }

    // --- strategic merge ---

    fn smp(kind: &str, doc: Value, patch: Value) -> Result<Value, PatchError> {
        apply_strategic_merge_patch(&doc, &patch, &k8s_merge_keys(kind))
    }

    fn node() -> Value {
        json!({"metadata": {"name": "n1", "labels": {"a": "1"}},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "T0"},
                    {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "T0"},
                    {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": "T0"},
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "lastHeartbeatTime": "T0"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
                "images": [{"names": ["a"]}]}})
    }

    #[test]
    fn kubelet_node_status_patch() {
        // The patch shape of the kubelet's `tryUpdateNodeStatus` (pkg/kubelet/kubelet_node_status.go).
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "DiskPressure"}, {"type": "PIDPressure"}, {"type": "Ready"}],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "T1"},
                {"type": "MemoryPressure", "lastHeartbeatTime": "T1"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}, {"$patch": "replace"}],
            "images": [{"names": ["b"]}]}});
        let out = smp("Node", node(), patch).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "T1"},
                {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "T0"},
                {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": "T0"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "T1"}])
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
        );
        // images is atomic: replaced.
        assert_eq!(out["status"]["images"], json!([{"names": ["b"]}]));
        assert_eq!(out["metadata"], node()["metadata"]);
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let out = smp(
            "Node",
            node(),
            json!({"metadata": {"labels": {"a": null, "b": "2"}, "annotations": {"x": "y"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"], json!({"name": "n1", "labels": {"b": "2"}, "annotations": {"x": "y"}}));
    }

    #[test]
    fn set_element_order_reorders_and_keeps_server_only_items() {
        let doc = json!({"status": {"conditions": [{"type": "A", "v": 1}, {"type": "B", "v": 1}, {"type": "C", "v": 1}]}});
        let patch = json!({"status": {"$setElementOrder/conditions": [{"type": "C"}, {"type": "A"}, {"type": "D"}],
            "conditions": [{"type": "A", "v": 2}, {"type": "D", "v": 2}]}});
        let out = smp("Node", doc, patch).unwrap();
        // B is server-only: it keeps its place before C (index 1 < 2 in the original).
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "B", "v": 1}, {"type": "C", "v": 1}, {"type": "A", "v": 2}, {"type": "D", "v": 2}])
        );
    }

    #[test]
    fn merge_by_key_appends_new_and_deletes_with_directive() {
        let doc = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "E1", "value": "1"}], "args": ["p", "q"]},
            {"name": "b", "image": "y:1"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "x:2", "env": [{"name": "E2", "value": "2"}], "args": ["r"]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "z:1"}]}});
        let out = smp("Pod", doc, patch).unwrap();
        // E2 is new and nothing on the server precedes it, so it goes first (apimachinery order).
        assert_eq!(
            out["spec"]["containers"],
            json!([
                {"name": "a", "image": "x:2", "env": [{"name": "E2", "value": "2"}, {"name": "E1", "value": "1"}], "args": ["r"]},
                {"name": "c", "image": "z:1"}])
        );
    }

    #[test]
    fn map_directives_replace_delete_retain_keys() {
        let doc = json!({"spec": {"nodeSelector": {"a": "1", "b": "2"}, "securityContext": {"runAsUser": 1},
            "volumes": [{"name": "v", "hostPath": {"path": "/x"}, "extra": 1}]}});
        let patch = json!({"spec": {
            "nodeSelector": {"$patch": "replace", "c": "3"},
            "securityContext": {"$patch": "delete"},
            "volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}]}});
        let out = smp("Pod", doc, patch).unwrap();
        assert_eq!(
            out["spec"],
            json!({"nodeSelector": {"c": "3"}, "volumes": [{"name": "v", "emptyDir": {}}]})
        );
        let bad = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "emptyDir": {}}]}});
        assert_eq!(smp("Pod", json!({}), bad), Err(PatchError::KeyNotRetained("emptyDir".into())));
    }

    #[test]
    fn primitive_lists_merge_as_sets_and_delete_from_primitive_list() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"podCIDRs": ["10.0.0.0/24"]}});
        let patch = json!({"metadata": {"finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"]},
            "spec": {"podCIDRs": ["10.0.1.0/24"]}});
        let out = smp("Node", doc, patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a"]));
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.1.0/24", "10.0.0.0/24"]));
    }

    #[test]
    fn pod_status_patch_with_uid_and_atomic_container_statuses() {
        let doc = json!({"metadata": {"uid": "u1", "ownerReferences": [{"uid": "o1", "name": "x"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}, "ready": false}],
                "podIPs": [{"ip": "10.88.0.5"}]}});
        let patch = json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": "T"}}, "ready": true}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "podIPs": [{"ip": "10.88.0.6"}, {"ip": "10.88.0.5", "$patch": "delete"}]}});
        let out = smp("Pod", doc, patch).unwrap();
        assert_eq!(out["status"]["containerStatuses"][0]["state"], json!({"running": {"startedAt": "T"}}));
        assert_eq!(out["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
        assert_eq!(out["status"]["podIPs"], json!([{"ip": "10.88.0.6"}]));
        assert_eq!(out["metadata"]["ownerReferences"], json!([{"uid": "o1", "name": "x"}]));
    }

    #[test]
    fn new_list_in_patch_is_stripped_of_directives() {
        let out = smp(
            "Node",
            json!({"status": {}}),
            json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "1.2.3.4", "x": null}, {"$patch": "replace"}]}}),
        )
        .unwrap();
        assert_eq!(out["status"]["addresses"], json!([{"type": "InternalIP", "address": "1.2.3.4"}]));
    }

    #[test]
    fn a_directive_on_a_scalar_is_an_error() {
        let doc = json!({"spec": {"activeDeadlineSeconds": 5, "nodeSelector": {"a": "1"}, "args": ["x"]}});
        for field in ["activeDeadlineSeconds", "args"] {
            let patch = json!({"spec": {field: {"$patch": "delete"}}});
            assert_eq!(
                smp("Pod", doc.clone(), patch),
                Err(PatchError::DirectiveOnScalar(format!("spec.{field}"))),
                "{field}"
            );
        }
        // On a map, or where there is nothing, the directive still works.
        let out = smp(
            "Pod",
            doc.clone(),
            json!({"spec": {"nodeSelector": {"$patch": "delete"}, "x": {"$patch": "delete"}}}),
        );
        assert_eq!(out, Ok(json!({"spec": {"activeDeadlineSeconds": 5, "args": ["x"]}})));
    }

    #[test]
    fn malformed_strategic_patches_are_errors() {
        assert_eq!(smp("Pod", json!({}), json!([1])), Err(PatchError::NotAnObject(String::new())));
        assert_eq!(
            smp("Pod", json!({}), json!({"spec": {"$patch": "frob"}})),
            Err(PatchError::BadDirective("\"frob\"".into()))
        );
        assert!(matches!(
            smp(
                "Pod",
                json!({"spec": {"containers": [{"name": "a"}]}}),
                json!({"spec": {"containers": [{"image": "x"}]}})
            ),
            Err(PatchError::MissingMergeKey { .. })
        ));
        assert!(matches!(
            smp("Pod", json!({}), json!({"spec": {"containers": ["x"]}})),
            Err(PatchError::ListElementNotObject(_))
        ));
        assert!(matches!(
            smp("Node", json!({}), json!({"status": {"$setElementOrder/conditions": 5}})),
            Err(PatchError::BadDirectiveList(_))
        ));
        assert!(!PatchError::JsonPatchNotArray.to_string().is_empty());
    }

    #[test]
    fn order_follows_patch_without_set_element_order() {
        // New elements come first when nothing on the server precedes them (apimachinery behaviour).
        let doc = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        let out = smp("Node", doc, json!({"status": {"conditions": [{"type": "X"}]}})).unwrap();
        assert_eq!(out["status"]["conditions"], json!([{"type": "X"}, {"type": "A"}, {"type": "B"}]));
    }

    /// Walks the official v1.32 OpenAPI schema from a kind's root and checks that every list field with
    /// patch strategy `merge` has the same merge key in [`k8s_merge_keys`], and every other list is atomic.
    #[test]
    fn merge_keys_agree_with_official_schema() {
        let mut schemas = Map::new();
        for f in ["api__v1_openapi.json", "apis__coordination.k8s.io__v1_openapi.json"] {
            let Some(doc) = crate::openapi::official(f) else { return };
            schemas.extend(doc["components"]["schemas"].as_object().unwrap().clone());
        }
        fn reference(v: &Value) -> Option<String> {
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                return r.rsplit('/').next().map(str::to_string);
            }
            v.get("allOf").and_then(|a| a.get(0)).and_then(reference)
        }
        fn walk(
            schemas: &Map<String, Value>,
            name: &str,
            path: &mut Vec<String>,
            seen: &mut Vec<String>,
            keys: &dyn Fn(&[&str]) -> Option<&'static str>,
            checked: &mut usize,
        ) {
            let Some(props) = schemas[name].get("properties").and_then(Value::as_object) else { return };
            for (field, v) in props {
                path.push(field.clone());
                let target = if v.get("type").and_then(Value::as_str) == Some("array") {
                    let strat = v.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("");
                    let want = if strat.split(',').any(|s| s == "merge") {
                        Some(v.get("x-kubernetes-patch-merge-key").and_then(Value::as_str).unwrap_or(""))
                    } else {
                        None
                    };
                    let p: Vec<&str> = path.iter().map(String::as_str).collect();
                    assert_eq!(keys(&p), want, "{}", path.join("."));
                    *checked += 1;
                    v.get("items").and_then(reference)
                } else {
                    reference(v)
                };
                if let Some(t) = target {
                    if !seen.contains(&t) {
                        seen.push(t.clone());
                        walk(schemas, &t, path, seen, keys, checked);
                        seen.pop();
                    }
                }
                path.pop();
            }
        }
        for (kind, root) in [
            ("Pod", "io.k8s.api.core.v1.Pod"),
            ("Node", "io.k8s.api.core.v1.Node"),
            ("Namespace", "io.k8s.api.core.v1.Namespace"),
            ("Event", "io.k8s.api.core.v1.Event"),
            ("Lease", "io.k8s.api.coordination.v1.Lease"),
        ] {
            let keys = k8s_merge_keys(kind);
            let mut checked = 0;
            walk(&schemas, root, &mut Vec::new(), &mut vec![root.to_string()], &keys, &mut checked);
            assert!(checked > 0, "{kind}: no list fields found");
        }
    }
}
