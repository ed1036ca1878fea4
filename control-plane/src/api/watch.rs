//! Watches: chunked streams of `{"type":..,"object":..}` lines, from a resourceVersion, with
//! `timeoutSeconds`, bookmarks and `410 Expired` when the history no longer reaches back.

use super::status::ApiError;
use super::{table, wants_table, Selectors, Target};
use crate::server::http::{write_chunk, write_chunked_head, write_last_chunk, Request};
use crate::store::{Change, EventType, Store, StoreError};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a watch without `timeoutSeconds` runs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a bookmark is sent when asked for.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// A watch request.
pub struct WatchSpec {
    target: Target,
    selectors: Selectors,
    /// `None` means "current state first, then changes".
    since: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
    table: bool,
    include: Option<String>,
}

impl WatchSpec {
    /// From the query parameters.
    pub fn from_request(req: &Request, target: Target) -> Result<Self, ApiError> {
        let since = match req.param("resourceVersion") {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(
                rv.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
            ),
        };
        let timeout = match req.param("timeoutSeconds") {
            Some(t) => Duration::from_secs(
                t.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
            ),
            None => DEFAULT_TIMEOUT,
        };
        Ok(WatchSpec {
            selectors: Selectors::from_request(req)?,
            since,
            timeout,
            bookmarks: super::is_true(req.param("allowWatchBookmarks")),
            table: wants_table(req),
            include: req.param("includeObject").map(str::to_string),
            target,
        })
    }

    fn in_scope(&self, c: &Change) -> bool {
        c.key.resource == self.target.resource.store_name()
            && self.target.namespace.as_deref().is_none_or(|ns| c.key.namespace == ns)
    }

    fn event(&self, kind: &str, obj: &Value) -> Vec<u8> {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            table(self.target.resource.kind, std::slice::from_ref(obj), self.include.as_deref())
                .unwrap_or_else(|| obj.clone())
        } else {
            obj.clone()
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        line.into_bytes()
    }

    fn bookmark(&self, rv: u64) -> Vec<u8> {
        let r = self.target.resource;
        let obj = json!({"kind": r.kind, "apiVersion": r.api_version(),
                         "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
        self.event("BOOKMARK", &obj)
    }

    /// Streams the watch until the timeout, an expired history, or the client leaves
    /// (`alive` returns false).
    /// The event a change is for this watch, if any: with a selector, a modification that
    /// makes an object leave the selection is DELETED (with its new state) and one that makes
    /// it enter is ADDED, as kube-apiserver's watch cache reports them.
    fn event_type(&self, c: &Change) -> Option<&'static str> {
        let now = self.selectors.matches(&c.object);
        match c.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = c.prev.as_ref().map_or(now, |p| self.selectors.matches(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    pub fn stream(&self, store: &Store, w: &mut dyn Write, alive: &dyn Fn() -> bool) -> std::io::Result<()> {
        write_chunked_head(w, 200, "application/json")?;
        let deadline = Instant::now() + self.timeout;
        let mut rv = match self.since {
            Some(rv) => rv,
            None => {
                let (items, rv) =
                    store.list(&self.target.resource.store_name(), self.target.namespace.as_deref());
                for it in items.iter().filter(|o| self.selectors.matches(o)) {
                    write_chunk(w, &self.event("ADDED", it))?;
                }
                rv
            }
        };
        let mut last_bookmark = Instant::now();
        loop {
            match store.changes_since(rv, &|c| self.in_scope(c)) {
                Err(StoreError::Expired { oldest }) => {
                    let st =
                        ApiError::expired(format!("too old resource version: {rv} ({oldest})")).to_value();
                    write_chunk(w, &self.event("ERROR", &st))?;
                    break;
                }
                Err(e) => {
                    let st = ApiError::internal(e.to_string()).to_value();
                    write_chunk(w, &self.event("ERROR", &st))?;
                    break;
                }
                Ok((changes, now_rv)) => {
                    for c in &changes {
                        if let Some(kind) = self.event_type(c) {
                            write_chunk(w, &self.event(kind, &c.object))?;
                        }
                    }
                    rv = now_rv;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.bookmarks && now.duration_since(last_bookmark) >= BOOKMARK_EVERY {
                write_chunk(w, &self.bookmark(rv))?;
                last_bookmark = now;
            }
            store.wait_past(rv, (deadline - now).min(Duration::from_secs(1)));
            if !alive() {
                return Ok(());
            }
        }
        write_last_chunk(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{route, Route};
    use crate::store::Key;

    fn spec(query: &str) -> WatchSpec {
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods") else { panic!() };
        let req = Request { query: crate::server::http::parse_query(query), ..Request::default() };
        WatchSpec::from_request(&req, t).unwrap()
    }

    fn events(out: &[u8]) -> Vec<Value> {
        // Strip the chunk framing: every JSON line starts with '{'.
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn watch_sends_current_state_then_changes_and_ends_at_the_timeout() {
        let store = Store::in_memory();
        store.create(Key::new("pods", "default", "a"), json!({"metadata": {"name": "a"}})).unwrap();
        store.create(Key::new("pods", "other", "b"), json!({"metadata": {"name": "b"}})).unwrap();
        let mut out = Vec::new();
        spec("timeoutSeconds=0").stream(&store, &mut out, &|| true).unwrap();
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["type"], "ADDED");
        assert!(out.ends_with(b"0\r\n\r\n"));

        store.delete::<StoreError>(&Key::new("pods", "default", "a"), |_| Ok(())).unwrap();
        let mut out = Vec::new();
        spec("timeoutSeconds=0&resourceVersion=2").stream(&store, &mut out, &|| true).unwrap();
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["type"], "DELETED");
        assert_eq!(ev[0]["object"]["metadata"]["resourceVersion"], "3");
    }

    #[test]
    fn selected_watches_see_objects_enter_and_leave_the_selection() {
        let store = Store::in_memory();
        let key = Key::new("pods", "default", "a");
        let pod = |app: &str| json!({"metadata": {"name": "a", "labels": {"app": app}}});
        store.create(key.clone(), pod("web")).unwrap(); // rv 1
        store.update(key.clone(), pod("web"), None).unwrap(); // 2: still selected
        store.update(key.clone(), pod("db"), None).unwrap(); // 3: leaves
        store.update(key.clone(), pod("db"), None).unwrap(); // 4: stays out
        store.update(key.clone(), pod("web"), None).unwrap(); // 5: enters again
        store.delete::<StoreError>(&key, |_| Ok(())).unwrap(); // 6
        let mut out = Vec::new();
        spec("timeoutSeconds=0&labelSelector=app%3Dweb&resourceVersion=1")
            .stream(&store, &mut out, &|| true)
            .unwrap();
        let seen: Vec<(String, String)> = events(&out)
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().into(),
                    e["object"]["metadata"]["labels"]["app"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [("MODIFIED", "web"), ("DELETED", "db"), ("ADDED", "web"), ("DELETED", "web")];
        assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
        // Without a selector every change is what it is.
        let mut out = Vec::new();
        spec("timeoutSeconds=0&resourceVersion=1").stream(&store, &mut out, &|| true).unwrap();
        let kinds: Vec<String> =
            events(&out).iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]);
    }

    #[test]
    fn watch_from_before_the_history_is_expired() {
        let dir = std::env::temp_dir().join(format!("cp-watch-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            let s = Store::open(&dir).unwrap();
            s.create(Key::new("pods", "default", "a"), json!({"metadata": {"name": "a"}})).unwrap();
            s.create(Key::new("pods", "default", "b"), json!({"metadata": {"name": "b"}})).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let mut out = Vec::new();
        spec("timeoutSeconds=5&resourceVersion=1").stream(&store, &mut out, &|| true).unwrap();
        let ev = events(&out);
        assert_eq!(ev[0]["type"], "ERROR");
        assert_eq!(ev[0]["object"]["code"], 410);
        assert_eq!(ev[0]["object"]["reason"], "Expired");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
