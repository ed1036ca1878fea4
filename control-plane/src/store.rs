//! The object store: every object as JSON, one monotonically increasing resourceVersion shared
//! by all kinds, a bounded history of changes for watches, and a write-ahead append log.
//!
//! Every change is appended to `DIR/store.log` as one JSON line and the file is `fsync`ed
//! before the change is applied and acknowledged, so a crash loses nothing that was answered.
//! On start the log is replayed (a torn last line, left by a crash in the middle of a write, is
//! ignored) and then rewritten compacted: one `put` line per live object and the current
//! resourceVersion.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many changes are kept for watches that start from an older resourceVersion.
pub const HISTORY_LEN: usize = 10_000;

/// Where an object lives: its resource (plural, with the group for non-core groups), its
/// namespace (empty for cluster-scoped objects) and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The resource, e.g. `pods` or `leases.coordination.k8s.io`.
    pub resource: String,
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(resource: &str, namespace: &str, name: &str) -> Self {
        Key { resource: resource.to_string(), namespace: namespace.to_string(), name: name.to_string() }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (the object is its last state).
    Deleted,
}

impl EventType {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept for watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (its last state for deletions).
    pub object: Value,
    /// For a modification, the object before it (a watch with a selector turns a change that
    /// leaves or enters the selection into DELETED or ADDED).
    pub prev: Option<Value>,
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// No object under that key.
    NotFound,
    /// An object already exists under that key.
    AlreadyExists,
    /// The caller's resourceVersion is not the stored one.
    Conflict,
    /// The requested resourceVersion is older than the kept history.
    Expired {
        /// The oldest resourceVersion a watch can start from.
        oldest: u64,
    },
    /// Writing the log failed; nothing was changed.
    Io(io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "not found"),
            StoreError::AlreadyExists => write!(f, "already exists"),
            StoreError::Conflict => write!(f, "the object has been modified"),
            StoreError::Expired { oldest } => {
                write!(f, "too old resource version (the oldest kept is {oldest})")
            }
            StoreError::Io(e) => write!(f, "writing the store log: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// The resourceVersion just before the oldest change in `history`.
    history_base: u64,
    log: Option<File>,
}

/// The store. All methods take `&self`; a mutex serializes changes.
pub struct Store {
    inner: Mutex<Inner>,
    changed: Condvar,
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// The resourceVersion written in an object's metadata, if any.
pub fn object_rv(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// A log line's key members, to which the line adds its own.
fn key_json(key: &Key) -> Map<String, Value> {
    let mut line = Map::new();
    line.insert("r".into(), json!(key.resource));
    line.insert("ns".into(), json!(key.namespace));
    line.insert("n".into(), json!(key.name));
    line
}

fn key_from(line: &Value) -> Option<Key> {
    Some(Key::new(line.get("r")?.as_str()?, line.get("ns")?.as_str()?, line.get("n")?.as_str()?))
}

impl Store {
    /// A store kept only in memory (for tests).
    pub fn in_memory() -> Self {
        Store::from_inner(Inner {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_base: 0,
            log: None,
        })
    }

    fn from_inner(inner: Inner) -> Self {
        Store { inner: Mutex::new(inner), changed: Condvar::new() }
    }

    /// Opens the store in `dir`, replaying and compacting `dir/store.log`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join("store.log");
        let mut rv = 0u64;
        let mut objects = BTreeMap::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A torn last line (a crash during its write) was never acknowledged.
                let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
                let line_rv = entry.get("rv").and_then(Value::as_u64).unwrap_or(0);
                rv = rv.max(line_rv);
                match (entry.get("op").and_then(Value::as_str), key_from(&entry)) {
                    (Some("put"), Some(key)) => {
                        if let Some(obj) = entry.get("o") {
                            objects.insert(key, obj.clone());
                        }
                    }
                    (Some("del"), Some(key)) => {
                        objects.remove(&key);
                    }
                    _ => {}
                }
            }
        }
        // Rewrite compacted, then swap in atomically.
        let tmp: PathBuf = dir.join("store.log.tmp");
        {
            let mut out = File::create(&tmp)?;
            for (key, obj) in &objects {
                let mut line = key_json(key);
                line.insert("op".into(), json!("put"));
                line.insert("rv".into(), json!(object_rv(obj).unwrap_or(0)));
                line.insert("o".into(), obj.clone());
                writeln!(out, "{}", Value::Object(line))?;
            }
            writeln!(out, "{}", json!({"op": "rv", "rv": rv}))?;
            out.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(dir) {
            // Make the rename durable; some file systems refuse fsync on a directory.
            let _ = d.sync_all();
        }
        let log = OpenOptions::new().append(true).open(&path)?;
        Ok(Store::from_inner(Inner {
            rv,
            objects,
            history: VecDeque::new(),
            history_base: rv,
            log: Some(log),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-changed (each change is
        // applied with plain inserts after the log write), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    /// The object under `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of `resource` (in `namespace` when given), sorted by namespace and name, and the
    /// resourceVersion of the list.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventType,
        key: Key,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let rv = inner.rv + 1;
        set_rv(&mut obj, rv);
        if let Some(log) = inner.log.as_mut() {
            let mut line = key_json(&key);
            line.insert("rv".into(), json!(rv));
            if kind == EventType::Deleted {
                line.insert("op".into(), json!("del"));
            } else {
                line.insert("op".into(), json!("put"));
                line.insert("o".into(), obj.clone());
            }
            let mut text = Value::Object(line).to_string();
            text.push('\n');
            log.write_all(text.as_bytes())?;
            log.sync_data()?;
        }
        inner.rv = rv;
        let prev = if kind == EventType::Deleted {
            inner.objects.remove(&key);
            None
        } else {
            inner.objects.insert(key.clone(), obj.clone()).filter(|_| kind == EventType::Modified)
        };
        inner.history.push_back(Change { rv, kind, key, object: obj.clone(), prev });
        while inner.history.len() > HISTORY_LEN {
            if let Some(old) = inner.history.pop_front() {
                inner.history_base = old.rv;
            }
        }
        self.changed.notify_all();
        Ok(obj)
    }

    /// Stores a new object; fails when one exists under `key`.
    pub fn create(&self, key: Key, obj: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        self.commit(&mut inner, EventType::Added, key, obj)
    }

    /// Replaces an object. `expected_rv`, when given, must be the stored resourceVersion.
    pub fn update(&self, key: Key, obj: Value, expected_rv: Option<u64>) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(&key) else { return Err(StoreError::NotFound) };
        if expected_rv.is_some_and(|rv| Some(rv) != object_rv(old)) {
            return Err(StoreError::Conflict);
        }
        self.commit(&mut inner, EventType::Modified, key, obj)
    }

    /// Reads, changes and writes an object under one lock. `f` returns the new object, or
    /// `None` to leave it as it is, or an error of its own.
    pub fn modify<E: From<StoreError>>(
        &self,
        key: &Key,
        f: impl FnOnce(&Value) -> Result<Option<Value>, E>,
    ) -> Result<Value, E> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key).cloned() else { return Err(StoreError::NotFound.into()) };
        match f(&old)? {
            Some(new) => Ok(self.commit(&mut inner, EventType::Modified, key.clone(), new)?),
            None => Ok(old),
        }
    }

    /// Removes an object. `check` sees the stored object first and may refuse.
    pub fn delete<E: From<StoreError>>(
        &self,
        key: &Key,
        check: impl FnOnce(&Value) -> Result<(), E>,
    ) -> Result<Value, E> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key).cloned() else { return Err(StoreError::NotFound.into()) };
        check(&old)?;
        Ok(self.commit(&mut inner, EventType::Deleted, key.clone(), old)?)
    }

    /// Changes after `since` that `filter` accepts. Fails with `Expired` when changes after
    /// `since` are no longer kept.
    pub fn changes_since(
        &self,
        since: u64,
        filter: &dyn Fn(&Change) -> bool,
    ) -> Result<(Vec<Change>, u64), StoreError> {
        let inner = self.lock();
        if since < inner.history_base {
            return Err(StoreError::Expired { oldest: inner.history_base });
        }
        let out = inner.history.iter().filter(|c| c.rv > since && filter(c)).cloned().collect();
        Ok((out, inner.rv))
    }

    /// Waits until the resourceVersion passes `rv` or `timeout` elapses; returns the current one.
    pub fn wait_past(&self, rv: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while inner.rv <= rv {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            inner = match self.changed.wait_timeout(inner, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        inner.rv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn resource_versions_increase_and_conflicts_are_caught() {
        let s = Store::in_memory();
        let a = s.create(Key::new("pods", "default", "a"), obj("a")).unwrap();
        assert_eq!(object_rv(&a), Some(1));
        assert!(matches!(
            s.create(Key::new("pods", "default", "a"), obj("a")),
            Err(StoreError::AlreadyExists)
        ));
        let b = s.update(Key::new("pods", "default", "a"), obj("a"), Some(1)).unwrap();
        assert_eq!(object_rv(&b), Some(2));
        assert!(matches!(
            s.update(Key::new("pods", "default", "a"), obj("a"), Some(1)),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            s.update(Key::new("pods", "default", "x"), obj("x"), None),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn history_feeds_watches_and_deletes_are_events() {
        let s = Store::in_memory();
        s.create(Key::new("pods", "default", "a"), obj("a")).unwrap();
        s.create(Key::new("nodes", "", "n"), obj("n")).unwrap();
        s.delete::<StoreError>(&Key::new("pods", "default", "a"), |_| Ok(())).unwrap();
        let (changes, rv) = s.changes_since(1, &|c| c.key.resource == "pods").unwrap();
        assert_eq!(rv, 3);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, EventType::Deleted);
        assert_eq!(s.list("pods", None).0.len(), 0);
        assert_eq!(s.wait_past(2, Duration::from_millis(1)), 3);
    }

    #[test]
    fn log_replays_after_reopen_and_ignores_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("cp-store-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        {
            let s = Store::open(&dir).unwrap();
            s.create(Key::new("pods", "default", "a"), obj("a")).unwrap();
            s.create(Key::new("pods", "default", "b"), obj("b")).unwrap();
            s.delete::<StoreError>(&Key::new("pods", "default", "a"), |_| Ok(())).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(dir.join("store.log")).unwrap();
        f.write_all(b"{\"op\":\"put\",\"r\":\"po").unwrap();
        drop(f);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.rv(), 3);
        let (items, _) = s.list("pods", Some("default"));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "b");
        // Watches from before the restart cannot be served.
        assert!(matches!(s.changes_since(1, &|_| true), Err(StoreError::Expired { .. })));
        let c = s.create(Key::new("pods", "default", "c"), obj("c")).unwrap();
        assert_eq!(object_rv(&c), Some(4));
        fs::remove_dir_all(&dir).unwrap();
    }
}
