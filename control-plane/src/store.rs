//! The object store: every object as JSON, one monotonically increasing resourceVersion shared
//! by all kinds, a bounded history of changes for watches, and a write-ahead append log.
//!
//! Every change is appended to `DIR/store.log` as one JSON line and the file is `fsync`ed
//! before the change is applied and acknowledged, so a crash loses nothing that was answered.
//! A write that fails is cut off the log again, so no partial line stays in the middle.
//!
//! On start the log is replayed. Every complete line must read back: a line that does not is
//! an error naming the file, the line and the reason, and the store does not open (nothing is
//! skipped and then compacted away). Only a last line without its line break, left by a crash
//! in the middle of a write, is dropped with a warning: it was never acknowledged, since the
//! answer comes only after the `fsync`. The log is then rewritten compacted (one `put` line per
//! live object and the current resourceVersion), and compacted again while running whenever it
//! grows past twice the live data and [`Limits::compact_min_bytes`]: a new file is written,
//! `fsync`ed and renamed over the old one.
//!
//! Bounds ([`Limits`]): an object is at most [`Limits::max_object_bytes`] of JSON and
//! [`MAX_DEPTH`] levels deep (so its log line, one level deeper, is always readable by
//! serde_json, whose limit is 128); the live objects cost at most [`Limits::max_live_bytes`]
//! of memory (a write that would grow past it is refused, as etcd refuses writes past its
//! quota); the history for watches keeps at most [`Limits::history_len`] changes and
//! [`Limits::history_bytes`] bytes; events (core/v1 and events.k8s.io/v1) expire
//! [`Limits::event_ttl`] after their last write, as kube-apiserver's `--event-ttl` leases do,
//! and watches see them DELETED. Memory is counted with [`mem_cost`], an upper estimate of
//! what a `serde_json::Value` takes on the heap.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How many changes are kept for watches that start from an older resourceVersion.
pub const HISTORY_LEN: usize = 10_000;

/// The deepest object the store takes, counted in nested objects and arrays (`{}` is 1). Its
/// log line is one level deeper and a list or watch event adds at most three more, all below
/// serde_json's limit of 128.
pub const MAX_DEPTH: usize = 100;

/// The resources whose objects expire (`--event-ttl`).
pub const TTL_RESOURCES: &[&str] = &["events", "events.events.k8s.io"];

/// The store's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest object, as JSON (etcd's default `--max-request-bytes`, 1.5 MiB).
    pub max_object_bytes: usize,
    /// The memory all live objects may take ([`mem_cost`]).
    pub max_live_bytes: usize,
    /// The most changes kept for watches.
    pub history_len: usize,
    /// The most memory those changes may take ([`mem_cost`] of each object and its previous
    /// state).
    pub history_bytes: usize,
    /// How long an event lives after its last write (`None`: forever).
    pub event_ttl: Option<Duration>,
    /// The log is compacted online when it is larger than this and than twice the live data.
    pub compact_min_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: 1536 * 1024,
            max_live_bytes: 256 * 1024 * 1024,
            history_len: HISTORY_LEN,
            history_bytes: 64 * 1024 * 1024,
            event_ttl: Some(Duration::from_secs(3600)),
            compact_min_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An upper estimate of the heap memory `v` takes, plus its own 32-byte slot: strings and keys
/// count their bytes and an allocator header, object members the map's per-entry overhead (a
/// B-tree node at its emptiest). Linear in the size of `v`, without recursion.
pub fn mem_cost(v: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<Value>();
    const ALLOC: usize = 16;
    const ENTRY: usize = 24 + 80;
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(SLOT);
        match v {
            Value::String(s) => total = total.saturating_add(s.len() + ALLOC),
            Value::Array(a) => {
                total = total.saturating_add(ALLOC);
                stack.extend(a.iter());
            }
            Value::Object(m) => {
                total = total.saturating_add(ALLOC);
                for (k, x) in m {
                    total = total.saturating_add(ENTRY + k.len() + ALLOC);
                    stack.push(x);
                }
            }
            _ => {}
        }
    }
    total
}

/// Whether `v` nests objects and arrays deeper than `max` levels (`{}` and `[]` are one level),
/// looking no deeper than `max + 1` levels and without recursion.
pub fn deeper_than(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                if d > max {
                    return true;
                }
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                if d > max {
                    return true;
                }
                stack.extend(m.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    false
}

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
    /// The object, as JSON, is larger than [`Limits::max_object_bytes`].
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The object nests deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The live objects would take more than [`Limits::max_live_bytes`].
    Full {
        /// The limit.
        limit: usize,
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
            StoreError::TooLarge { bytes, limit } => {
                write!(f, "the object is too large: {bytes} bytes, the limit is {limit}")
            }
            StoreError::TooDeep => {
                write!(f, "the object nests objects and arrays deeper than {MAX_DEPTH} levels")
            }
            StoreError::Full { limit } => {
                write!(f, "the store is full: the objects would take more than {limit} bytes")
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

/// A live object with what it costs.
struct Entry {
    obj: Value,
    /// The bytes of its `put` line in the log.
    line: u64,
    /// [`mem_cost`] of `obj`.
    mem: usize,
    /// When it expires (Unix milliseconds).
    expires: Option<u64>,
}

/// The append log.
struct Log {
    file: File,
    dir: PathBuf,
    /// Its length: a failed write is cut back to it.
    len: u64,
    /// A failed write could not be cut off: no more writes.
    broken: bool,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Entry>,
    /// (expiry in Unix milliseconds, key) of the objects that expire.
    expiry: BTreeSet<(u64, Key)>,
    live_mem: usize,
    live_line_bytes: u64,
    /// Changes with their memory cost.
    history: VecDeque<(Arc<Change>, usize)>,
    history_mem: usize,
    /// The resourceVersion just before the oldest change in `history`.
    history_base: u64,
    log: Option<Log>,
}

/// The store. All methods take `&self`; a mutex serializes changes.
pub struct Store {
    inner: Mutex<Inner>,
    changed: Condvar,
    limits: Limits,
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

/// A duration as Go writes one (`1h`, `90s`, `1h0m0s`, `500ms`), as kube-apiserver's
/// `--event-ttl` takes it.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(total);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let one = match &rest[..unit] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return None,
        };
        total = total.checked_add(one.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[unit..];
    }
    Some(total)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A log line: the key members, the resourceVersion, the operation, then `extra` members and,
/// for a put, the object's JSON text last.
fn log_line(key: &Key, rv: u64, op: &str, expires: Option<u64>, obj_text: Option<&str>) -> String {
    let mut head = Map::new();
    head.insert("r".into(), Value::String(key.resource.clone()));
    head.insert("ns".into(), Value::String(key.namespace.clone()));
    head.insert("n".into(), Value::String(key.name.clone()));
    head.insert("rv".into(), Value::from(rv));
    head.insert("op".into(), Value::String(op.into()));
    if let Some(e) = expires {
        head.insert("exp".into(), Value::from(e));
    }
    let mut text = Value::Object(head).to_string();
    if let Some(o) = obj_text {
        text.pop();
        text.push_str(",\"o\":");
        text.push_str(o);
        text.push('}');
    }
    text.push('\n');
    text
}

fn key_from(line: &Value) -> Option<Key> {
    Some(Key::new(line.get("r")?.as_str()?, line.get("ns")?.as_str()?, line.get("n")?.as_str()?))
}

fn invalid(path: &Path, line: usize, why: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}:{line}: {why}", path.display()))
}

/// What replay read from a log.
struct Replayed {
    rv: u64,
    objects: BTreeMap<Key, (Value, Option<u64>)>,
}

/// Reads a log; any complete line that cannot be read is an error naming the file and line.
fn replay(path: &Path, now_ms: u64) -> io::Result<Replayed> {
    let mut out = Replayed { rv: 0, objects: BTreeMap::new() };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let mut r = BufReader::new(file);
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        number += 1;
        if buf.last() != Some(&b'\n') {
            // Written by a crash during its write, so never acknowledged.
            eprintln!(
                "control-plane: warning: {}:{number}: dropping a torn last line ({n} bytes without a line break)",
                path.display()
            );
            break;
        }
        let entry: Value = serde_json::from_slice(&buf).map_err(|e| invalid(path, number, e))?;
        let rv = entry.get("rv").and_then(Value::as_u64).ok_or_else(|| invalid(path, number, "no rv"))?;
        out.rv = out.rv.max(rv);
        match entry.get("op").and_then(Value::as_str) {
            Some("rv") => {}
            Some("put") => {
                let key = key_from(&entry).ok_or_else(|| invalid(path, number, "no key"))?;
                let obj = match entry.get("o") {
                    Some(o @ Value::Object(_)) => o.clone(),
                    _ => return Err(invalid(path, number, "a put without an object")),
                };
                let exp = match entry.get("exp") {
                    None => None,
                    Some(e) => Some(e.as_u64().ok_or_else(|| invalid(path, number, "a bad exp"))?),
                };
                if exp.is_some_and(|e| e <= now_ms) {
                    out.objects.remove(&key);
                } else {
                    out.objects.insert(key, (obj, exp));
                }
            }
            Some("del") => {
                let key = key_from(&entry).ok_or_else(|| invalid(path, number, "no key"))?;
                out.objects.remove(&key);
            }
            other => return Err(invalid(path, number, format!("unknown operation {other:?}"))),
        }
    }
    Ok(out)
}

impl Store {
    /// A store kept only in memory (for tests), with the default limits.
    pub fn in_memory() -> Self {
        Store::in_memory_with(Limits::default())
    }

    /// A store kept only in memory with `limits`.
    pub fn in_memory_with(limits: Limits) -> Self {
        Store::from_inner(Inner::new(0, None), limits)
    }

    fn from_inner(inner: Inner, limits: Limits) -> Self {
        Store { inner: Mutex::new(inner), changed: Condvar::new(), limits }
    }

    /// Opens the store in `dir` with the default limits.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Store::open_with(dir, Limits::default())
    }

    /// Opens the store in `dir`, replaying and compacting `dir/store.log`. Fails, naming the
    /// file and line, when a complete line cannot be read.
    pub fn open_with(dir: &Path, limits: Limits) -> io::Result<Self> {
        let path = dir.join("store.log");
        let replayed = replay(&path, unix_millis(SystemTime::now()))?;
        let mut inner = Inner::new(replayed.rv, None);
        for (key, (obj, expires)) in replayed.objects {
            let mem = mem_cost(&obj);
            inner.live_mem += mem;
            if let Some(e) = expires {
                inner.expiry.insert((e, key.clone()));
            }
            inner.objects.insert(key, Entry { obj, line: 0, mem, expires });
        }
        let (file, len) = inner.write_compacted(dir)?;
        inner.log = Some(Log { file, dir: dir.to_path_buf(), len, broken: false });
        Ok(Store::from_inner(inner, limits))
    }

    /// The limits this store keeps.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
        self.lock().objects.get(key).map(|e| e.obj.clone())
    }

    /// Objects of `resource` (in `namespace` when given), sorted by namespace and name, and the
    /// resourceVersion of the list.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, e)| e.obj.clone())
            .collect();
        (items, inner.rv)
    }

    /// The store log's length in bytes and the bytes its live objects' lines take (0 and the
    /// estimate for a store in memory).
    pub fn log_bytes(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.log.as_ref().map_or(0, |l| l.len), inner.live_line_bytes)
    }

    /// The memory the live objects and the history take ([`mem_cost`]).
    pub fn mem_bytes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.live_mem, inner.history_mem)
    }

    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventType,
        key: Key,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let rv = inner.rv + 1;
        let now = unix_millis(SystemTime::now());
        set_rv(&mut obj, rv);
        let (text, mem, expires) = if kind == EventType::Deleted {
            (log_line(&key, rv, "del", None, None), 0, None)
        } else {
            if deeper_than(&obj, MAX_DEPTH) {
                return Err(StoreError::TooDeep);
            }
            let obj_text = serde_json::to_string(&obj).map_err(|e| StoreError::Io(e.into()))?;
            if obj_text.len() > self.limits.max_object_bytes {
                return Err(StoreError::TooLarge {
                    bytes: obj_text.len(),
                    limit: self.limits.max_object_bytes,
                });
            }
            let mem = mem_cost(&obj);
            let old_mem = inner.objects.get(&key).map_or(0, |e| e.mem);
            if mem > old_mem
                && inner.live_mem.saturating_sub(old_mem).saturating_add(mem) > self.limits.max_live_bytes
            {
                return Err(StoreError::Full { limit: self.limits.max_live_bytes });
            }
            let expires = match self.limits.event_ttl {
                Some(ttl) if TTL_RESOURCES.contains(&key.resource.as_str()) => {
                    Some(now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
                }
                _ => None,
            };
            (log_line(&key, rv, "put", expires, Some(&obj_text)), mem, expires)
        };
        if let Some(log) = inner.log.as_mut() {
            log.append(text.as_bytes())?;
        }
        inner.rv = rv;
        let old = if kind == EventType::Deleted {
            inner.objects.remove(&key)
        } else {
            let line = text.len() as u64;
            inner.objects.insert(key.clone(), Entry { obj: obj.clone(), line, mem, expires })
        };
        if let Some(old) = &old {
            inner.live_mem = inner.live_mem.saturating_sub(old.mem);
            inner.live_line_bytes = inner.live_line_bytes.saturating_sub(old.line);
            if let Some(e) = old.expires {
                inner.expiry.remove(&(e, key.clone()));
            }
        }
        if kind != EventType::Deleted {
            inner.live_mem += mem;
            inner.live_line_bytes += text.len() as u64;
            if let Some(e) = expires {
                inner.expiry.insert((e, key.clone()));
            }
        }
        let prev = old.map(|e| e.obj).filter(|_| kind == EventType::Modified);
        let cost = mem_cost(&obj) + prev.as_ref().map_or(0, mem_cost);
        inner.history.push_back((Arc::new(Change { rv, kind, key, object: obj.clone(), prev }), cost));
        inner.history_mem += cost;
        // The newest change always stays, so a watch waiting at the previous version sees it.
        while inner.history.len() > 1
            && (inner.history.len() > self.limits.history_len
                || inner.history_mem > self.limits.history_bytes)
        {
            if let Some((old, cost)) = inner.history.pop_front() {
                inner.history_base = old.rv;
                inner.history_mem = inner.history_mem.saturating_sub(cost);
            }
        }
        inner.maybe_compact(self.limits.compact_min_bytes);
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
        if expected_rv.is_some_and(|rv| Some(rv) != object_rv(&old.obj)) {
            return Err(StoreError::Conflict);
        }
        self.commit(&mut inner, EventType::Modified, key, obj)
    }

    /// Reads, changes and writes an object under one lock. `f` returns the new object, or
    /// `None` to leave it as it is, or an error of its own. Only for changes whose work does
    /// not depend on a request body's size: the others read, change outside the lock, and
    /// [`Store::update`] with the resourceVersion they read.
    pub fn modify<E: From<StoreError>>(
        &self,
        key: &Key,
        f: impl FnOnce(&Value) -> Result<Option<Value>, E>,
    ) -> Result<Value, E> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key).map(|e| e.obj.clone()) else {
            return Err(StoreError::NotFound.into());
        };
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
        let Some(old) = inner.objects.get(key).map(|e| e.obj.clone()) else {
            return Err(StoreError::NotFound.into());
        };
        check(&old)?;
        Ok(self.commit(&mut inner, EventType::Deleted, key.clone(), old)?)
    }

    /// Removes the objects whose time ran out by `now` (as watches see it: DELETED), at most
    /// `batch` of them under one hold of the lock; returns how many went.
    pub fn expire(&self, now: SystemTime, batch: usize) -> Result<usize, StoreError> {
        let now = unix_millis(now);
        let mut removed = 0;
        loop {
            let mut inner = self.lock();
            let due: Vec<Key> = inner
                .expiry
                .iter()
                .take_while(|(e, _)| *e <= now)
                .take(batch)
                .map(|(_, k)| k.clone())
                .collect();
            if due.is_empty() {
                return Ok(removed);
            }
            for key in due {
                let Some(obj) = inner.objects.get(&key).map(|e| e.obj.clone()) else { continue };
                self.commit(&mut inner, EventType::Deleted, key, obj)?;
                removed += 1;
            }
        }
    }

    /// Removes expired objects every `every`, forever (run it on a thread of its own).
    pub fn expire_forever(&self, every: Duration) {
        loop {
            std::thread::sleep(every);
            if let Err(e) = self.expire(SystemTime::now(), 1000) {
                eprintln!("control-plane: removing expired objects: {e}");
            }
        }
    }

    /// Changes after `since` that `filter` accepts. Fails with `Expired` when changes after
    /// `since` are no longer kept.
    pub fn changes_since(
        &self,
        since: u64,
        filter: &dyn Fn(&Change) -> bool,
    ) -> Result<(Vec<Arc<Change>>, u64), StoreError> {
        let inner = self.lock();
        if since < inner.history_base {
            return Err(StoreError::Expired { oldest: inner.history_base });
        }
        // The history is in resourceVersion order: start at the first change after `since`.
        let start = inner.history.partition_point(|(c, _)| c.rv <= since);
        let out = inner.history.range(start..).filter(|(c, _)| filter(c)).map(|(c, _)| c.clone()).collect();
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

impl Log {
    /// Appends `bytes` and makes them durable; on failure cuts the log back to where it was.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an earlier failed write could not be cut off the log"));
        }
        let res = self.file.write_all(bytes).and_then(|()| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if self.file.set_len(self.len).and_then(|()| self.file.sync_data()).is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }
}

impl Inner {
    fn new(rv: u64, log: Option<Log>) -> Self {
        Inner {
            rv,
            objects: BTreeMap::new(),
            expiry: BTreeSet::new(),
            live_mem: 0,
            live_line_bytes: 0,
            history: VecDeque::new(),
            history_mem: 0,
            history_base: rv,
            log,
        }
    }

    /// Writes every live object and the resourceVersion to `dir/store.log.tmp`, syncs it and
    /// renames it over `dir/store.log`; returns the new log, open for appending, and its length.
    fn write_compacted(&mut self, dir: &Path) -> io::Result<(File, u64)> {
        let path = dir.join("store.log");
        let tmp: PathBuf = dir.join("store.log.tmp");
        let mut len = 0u64;
        let mut live = 0u64;
        {
            // Readable by its owner only: the log holds every object, secrets included.
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            let mut out = io::BufWriter::new(file);
            for (key, e) in self.objects.iter_mut() {
                let text = serde_json::to_string(&e.obj).map_err(io::Error::other)?;
                let line = log_line(key, object_rv(&e.obj).unwrap_or(0), "put", e.expires, Some(&text));
                out.write_all(line.as_bytes())?;
                e.line = line.len() as u64;
                live += e.line;
                len += e.line;
            }
            let last = format!("{{\"op\":\"rv\",\"rv\":{}}}\n", self.rv);
            out.write_all(last.as_bytes())?;
            len += last.len() as u64;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        // Opened before the rename, so the handle is the new file's whatever happens next.
        let file = OpenOptions::new().append(true).open(&tmp)?;
        fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(dir) {
            // Make the rename durable; some file systems refuse fsync on a directory.
            let _ = d.sync_all();
        }
        self.live_line_bytes = live;
        Ok((file, len))
    }

    /// Compacts the log when it is larger than `min` and than twice its live lines. A failure
    /// leaves the old log in use.
    fn maybe_compact(&mut self, min: u64) {
        let Some(log) = &self.log else { return };
        if log.broken || log.len <= min || log.len <= 2 * self.live_line_bytes {
            return;
        }
        let dir = log.dir.clone();
        match self.write_compacted(&dir) {
            Ok((file, len)) => self.log = Some(Log { file, dir, len, broken: false }),
            Err(e) => eprintln!("control-plane: compacting {}: {e}", dir.join("store.log").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cp-store-{tag}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!({});
        for _ in 1..levels {
            v = json!({"x": v});
        }
        v
    }

    /// Issue 13, finding 6: an object 128 levels deep was accepted and its log line (one
    /// level deeper) could not be read back, so a restart lost it. Now the store refuses
    /// what it could not read back, and every object it takes survives a restart, the deepest
    /// and the largest allowed included.
    #[test]
    fn the_deepest_and_largest_objects_allowed_survive_a_restart() {
        let dir = temp_dir("deep");
        let limits = Limits::default();
        let deepest = json!({"metadata": {"name": "deep"}, "spec": nested(MAX_DEPTH - 1)});
        assert!(!deeper_than(&deepest, MAX_DEPTH) && deeper_than(&deepest, MAX_DEPTH - 1));
        let mut largest = json!({"metadata": {"name": "large", "resourceVersion": "1"}, "data": ""});
        let room = limits.max_object_bytes - serde_json::to_string(&largest).unwrap().len();
        largest["data"] = json!("y".repeat(room));
        {
            let s = Store::open(&dir).unwrap();
            s.create(Key::new("pods", "default", "deep"), deepest.clone()).unwrap();
            s.create(Key::new("pods", "default", "large"), largest.clone()).unwrap();
            let too_deep = json!({"metadata": {"name": "d2"}, "spec": nested(MAX_DEPTH)});
            assert!(matches!(
                s.create(Key::new("pods", "default", "d2"), too_deep),
                Err(StoreError::TooDeep)
            ));
            let too_deep = json!({"metadata": {"name": "d3"}, "spec": nested(126)});
            assert!(matches!(
                s.create(Key::new("pods", "default", "d3"), too_deep),
                Err(StoreError::TooDeep)
            ));
            let mut too_large = largest.clone();
            too_large["data"] = json!("y".repeat(room + 1));
            assert!(matches!(
                s.create(Key::new("pods", "default", "l2"), too_large),
                Err(StoreError::TooLarge { .. })
            ));
        }
        let s = Store::open(&dir).unwrap();
        let (items, _) = s.list("pods", Some("default"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["spec"], deepest["spec"]);
        assert_eq!(items[1]["data"], largest["data"]);
        // And again after the compaction the open did.
        drop(s);
        assert_eq!(Store::open(&dir).unwrap().list("pods", None).0.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        let mode = |dir: &Path| fs::metadata(dir.join("store.log")).unwrap().permissions().mode() & 0o777;
        drop(Store::open(&dir).unwrap());
        assert_eq!(mode(&dir), 0o600);
        // An older log left readable by others is private after the next start.
        fs::set_permissions(dir.join("store.log"), fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&dir).unwrap());
        assert_eq!(mode(&dir), 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replay_refuses_a_line_it_cannot_read_and_names_it() {
        let dir = temp_dir("bad");
        {
            let s = Store::open(&dir).unwrap();
            s.create(Key::new("pods", "default", "a"), obj("a")).unwrap();
        }
        let path = dir.join("store.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"put\",\"r\":\"pods\"\n").unwrap();
        f.write_all(b"{\"op\":\"rv\",\"rv\":9}\n").unwrap();
        drop(f);
        let before = fs::read(&path).unwrap();
        let e = Store::open(&dir).err().expect("the store must not open");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().starts_with(&format!("{}:3: ", path.display())), "{e}");
        // Nothing was compacted away.
        assert_eq!(fs::read(&path).unwrap(), before);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_expire_and_watches_see_them_deleted() {
        let dir = temp_dir("ttl");
        let limits = Limits { event_ttl: Some(Duration::from_secs(60)), ..Limits::default() };
        let s = Store::open_with(&dir, limits.clone()).unwrap();
        s.create(Key::new("events", "default", "e1"), obj("e1")).unwrap();
        s.create(Key::new("events.events.k8s.io", "default", "e2"), obj("e2")).unwrap();
        s.create(Key::new("pods", "default", "p"), obj("p")).unwrap();
        assert_eq!(s.expire(SystemTime::now(), 10).unwrap(), 0);
        let later = SystemTime::now() + Duration::from_secs(61);
        assert_eq!(s.expire(later, 1).unwrap(), 2);
        let (changes, _) = s.changes_since(3, &|_| true).unwrap();
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [EventType::Deleted, EventType::Deleted]
        );
        assert!(s.get(&Key::new("events", "default", "e1")).is_none());
        assert!(s.get(&Key::new("pods", "default", "p")).is_some());
        // The expiry is in the log: an event whose time ran out while the server was down is
        // gone after the restart.
        let short = Limits { event_ttl: Some(Duration::from_millis(1)), ..Limits::default() };
        drop(s);
        let s = Store::open_with(&dir, short.clone()).unwrap();
        s.create(Key::new("events", "default", "e3"), obj("e3")).unwrap();
        drop(s);
        std::thread::sleep(Duration::from_millis(20));
        let s = Store::open_with(&dir, short).unwrap();
        assert!(s.get(&Key::new("events", "default", "e3")).is_none());
        assert_eq!(s.list("pods", None).0.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn history_is_bounded_in_bytes_and_the_log_is_compacted_online() {
        let dir = temp_dir("compact");
        let limits = Limits { history_bytes: 256 * 1024, compact_min_bytes: 64 * 1024, ..Limits::default() };
        let s = Store::open_with(&dir, limits.clone()).unwrap();
        let key = Key::new("leases.coordination.k8s.io", "kube-node-lease", "n1");
        let big = |i: usize| json!({"metadata": {"name": "n1", "annotations": {"a": format!("{i}{}", "z".repeat(10_000))}}});
        s.create(key.clone(), big(0)).unwrap();
        let mut written = 0;
        for i in 1..300 {
            s.update(key.clone(), big(i), None).unwrap();
            written += 10_000;
            let (_, history) = s.mem_bytes();
            assert!(history <= limits.history_bytes, "{history}");
        }
        let (log, live) = s.log_bytes();
        assert!(written > 2_000_000 && log < 64 * 1024 + 2 * live + 20_000, "log {log}, live {live}");
        assert!(fs::metadata(dir.join("store.log")).unwrap().len() == log);
        // Old versions are gone from the history: a watch from there is told so.
        assert!(matches!(s.changes_since(1, &|_| true), Err(StoreError::Expired { .. })));
        // The newest still is.
        assert_eq!(s.changes_since(s.rv() - 1, &|_| true).unwrap().0.len(), 1);
        drop(s);
        let s = Store::open_with(&dir, limits).unwrap();
        assert_eq!(
            s.get(&key).unwrap()["metadata"]["annotations"]["a"],
            big(299)["metadata"]["annotations"]["a"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_live_data_is_bounded_but_shrinking_writes_and_deletes_pass() {
        let limits = Limits { max_live_bytes: 64 * 1024, ..Limits::default() };
        let s = Store::in_memory_with(limits);
        let key = Key::new("pods", "default", "a");
        s.create(key.clone(), json!({"metadata": {"name": "a"}, "d": "x".repeat(40_000)})).unwrap();
        let err = s.create(
            Key::new("pods", "default", "b"),
            json!({"metadata": {"name": "b"}, "d": "x".repeat(40_000)}),
        );
        assert!(matches!(err, Err(StoreError::Full { .. })), "{err:?}");
        s.update(key.clone(), json!({"metadata": {"name": "a"}, "d": "small"}), None).unwrap();
        s.create(
            Key::new("pods", "default", "b"),
            json!({"metadata": {"name": "b"}, "d": "x".repeat(40_000)}),
        )
        .unwrap();
        s.delete::<StoreError>(&key, |_| Ok(())).unwrap();
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h0m30s"), Some(Duration::from_secs(3630)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "h", "5", "1d", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn mem_cost_counts_every_value() {
        assert!(mem_cost(&json!([])) < mem_cost(&json!([0])));
        let wide = Value::Array(vec![json!(0); 1000]);
        assert!(mem_cost(&wide) >= 32 * 1000);
        assert!(mem_cost(&json!({"k": "v"})) > 32 + 24 + 32);
    }
}
