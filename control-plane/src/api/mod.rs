//! The REST API: routing, the verbs on every resource, watch, and graceful pod deletion.
//!
//! Request bodies, paths and query parameters come from the network: every malformation is
//! answered with a Status error.

pub mod resources;
pub mod status;
pub mod watch;

use crate::admission;
use crate::auth::User;
use crate::json;
use crate::patch::PatchError;
use crate::rfc3339;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::http::{Request, Response};
use crate::store::{object_rv, Key, Store, StoreError};
use crate::validate::{self, check_fields, FieldValidation};
use resources::Resource;
use serde_json::{json, Map, Value};
use status::ApiError;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The namespaces that always exist.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What a handler produced.
pub enum Reply {
    /// A complete response.
    Full(Response),
    /// A watch to stream.
    Watch(watch::WatchSpec),
    /// A log to proxy from a node.
    Log(crate::server::logs::LogSpec),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Full(e.response())
    }
}

/// The time as `metav1.Time`.
pub fn now_rfc3339() -> String {
    rfc3339::format_time(rfc3339::unix_seconds(SystemTime::now()))
}

/// A path resolved to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resource.
    pub resource: &'static Resource,
    /// The namespace (`None` for cluster-scoped objects or all namespaces).
    pub namespace: Option<String>,
    /// The object's name (`None` for the collection).
    pub name: Option<String>,
    /// The subresource.
    pub sub: Option<String>,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A discovery or informational document.
    Document(Value),
    /// A resource, collection or subresource.
    Resource(Target),
    /// Nothing.
    Unknown,
}

/// Resolves a path.
pub fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Document(resources::version()),
        ["openapi", "v3"] => return Route::Document(crate::openapi::openapi_v3_index()),
        ["openapi", "v3", rest @ ..] => {
            return crate::openapi::openapi_v3(&rest.join("/")).map_or(Route::Unknown, Route::Document)
        }
        ["api"] => return Route::Document(resources::api_versions()),
        ["apis"] => return Route::Document(resources::api_group_list()),
        ["api", v] => return resources::resource_list("", v).map_or(Route::Unknown, Route::Document),
        ["apis", g] => return resources::api_group(g).map_or(Route::Unknown, Route::Document),
        ["apis", g, v] => return resources::resource_list(g, v).map_or(Route::Unknown, Route::Document),
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Route::Unknown,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..]
            if Resource::find(group, version, r).is_some_and(|r| r.namespaced) =>
        {
            (Some(ns.to_string()), [&[*r][..], more].concat())
        }
        other => (None, other.to_vec()),
    };
    let Some(resource) = rest.first().and_then(|r| Resource::find(group, version, r)) else {
        return Route::Unknown;
    };
    if rest.len() > 3 || (!resource.namespaced && namespace.is_some()) {
        return Route::Unknown;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if let Some(s) = &sub {
        if !resource.subresources.contains(&s.as_str()) {
            return Route::Unknown;
        }
    }
    Route::Resource(Target { resource, namespace, name, sub })
}

/// The shared state handlers work on.
pub struct Api {
    /// The objects.
    pub store: Store,
}

fn store_err(e: StoreError, t: &Target, name: &str) -> ApiError {
    let r = t.resource;
    match e {
        StoreError::NotFound => ApiError::not_found(r.plural, r.group, name),
        StoreError::AlreadyExists => ApiError::already_exists(r.plural, r.group, name),
        StoreError::Conflict => ApiError::conflict(
            r.plural,
            r.group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Expired { .. } => ApiError::expired(e.to_string()),
        StoreError::TooDeep => ApiError::invalid(r.kind, name, &e.to_string()),
        e => e.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { .. } => ApiError::entity_too_large(e.to_string()),
            StoreError::TooDeep => ApiError::unprocessable(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

/// apimachinery's `TotalAnnotationSizeLimitB`: the keys and values of an object's annotations
/// together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Refuses (422) an object whose annotations take more than [`MAX_ANNOTATIONS_BYTES`], as
/// apimachinery's `ValidateAnnotationsSize` does.
pub fn check_annotations_size(kind: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    let Some(m) = obj.pointer("/metadata/annotations").and_then(Value::as_object) else { return Ok(()) };
    let total = m.iter().fold(0usize, |n, (k, v)| n.saturating_add(k.len() + v.as_str().map_or(0, str::len)));
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(ApiError::invalid(
            kind,
            name,
            &format!("metadata.annotations: Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// How often a write whose object changed while it was being computed starts again.
const CONFLICT_RETRIES: usize = 5;

/// Parses a request body as JSON, or YAML when the content type says so.
pub fn parse_body(req: &Request) -> Result<Value, ApiError> {
    let v = parse_body_any_depth(req)?;
    if crate::store::deeper_than(&v, crate::store::MAX_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "the object nests objects and arrays deeper than {} levels",
            crate::store::MAX_DEPTH
        )));
    }
    Ok(v)
}

fn parse_body_any_depth(req: &Request) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("application/json");
    if req.body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if ct.contains("protobuf") {
        return crate::protobuf::decode_object(&req.body).map_err(|e| match e {
            crate::protobuf::ProtoError::Kind(_) => ApiError::unsupported_body(ct),
            e => ApiError::bad_request(format!("unable to decode the protobuf body: {e}")),
        });
    }
    if ct.contains("cbor") {
        return Err(ApiError::unsupported_body(ct));
    }
    if ct.contains("yaml") {
        let v: Value = serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
        Ok(v)
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
    }
}

/// A field of an object for field selectors (`metadata.name`, `spec.nodeName`, ...); absent
/// fields read as the empty string.
pub fn field(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The selectors of a LIST or WATCH.
pub struct Selectors {
    label: LabelSelector,
    field: FieldSelector,
}

impl Selectors {
    /// From `labelSelector` and `fieldSelector`.
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        let label = LabelSelector::parse(req.param("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let field = FieldSelector::parse(req.param("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        Ok(Selectors { label, field })
    }

    /// Whether an object is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches(&labels(obj)) && self.field.matches(&|f: &str| field(obj, f))
    }

    /// Whether every object is selected.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty() && self.field.is_empty()
    }
}

/// kube-apiserver's message when a continue token's snapshot can no longer be served.
pub const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Where a paged list resumes: the list's resourceVersion and the last object returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContinueToken {
    /// The resourceVersion of the first page.
    pub rv: u64,
    /// The namespace of the last object returned.
    pub ns: String,
    /// The name of the last object returned.
    pub name: String,
}

impl ContinueToken {
    fn after(rv: u64, last: &Value) -> Self {
        ContinueToken {
            rv,
            ns: meta_str(last, "namespace").unwrap_or("").to_string(),
            name: meta_str(last, "name").unwrap_or("").to_string(),
        }
    }

    /// The opaque `metadata.continue` string.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a token a client sent back.
    pub fn decode(s: &str) -> Result<Self, ApiError> {
        use base64::Engine;
        let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|e| bad(&e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))
    }

    /// Whether `obj` comes after this token's last object (lists are in namespace/name order).
    fn is_before(&self, obj: &Value) -> bool {
        let key = (meta_str(obj, "namespace").unwrap_or(""), meta_str(obj, "name").unwrap_or(""));
        key > (self.ns.as_str(), self.name.as_str())
    }
}

/// `limit` and `continue` of a list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most this many items (0: all).
    pub limit: usize,
    /// Resume after this token's object.
    pub after: Option<ContinueToken>,
}

impl Page {
    /// From the query parameters; a malformed `limit` or `continue` is 400 BadRequest.
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        let limit = match req.param("limit") {
            None | Some("") => 0,
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
                .max(0)
                .try_into()
                .unwrap_or(usize::MAX),
        };
        let after = match req.param("continue") {
            None | Some("") => None,
            Some(c) => Some(ContinueToken::decode(c)?),
        };
        Ok(Page { limit, after })
    }
}

/// Whether the client asked for a Table.
pub fn wants_table(req: &Request) -> bool {
    req.header("accept").is_some_and(|a| a.contains("as=Table"))
}

/// A Table of `items` (rows carry what `includeObject` asks for), or `None` when the kind has
/// no Table conversion.
pub fn table(kind: &str, items: &[Value], include: Option<&str>) -> Option<Value> {
    let include = crate::table::IncludeObject::from_query(include);
    let t = crate::table::to_table_with(kind, items, SystemTime::now(), include);
    (t.get("kind").and_then(Value::as_str) == Some("Table")).then_some(t)
}

/// A boolean query parameter, read as the apiserver reads one (Go's `strconv.ParseBool`):
/// the official Python client sends `watch=True`.
pub fn is_true(param: Option<&str>) -> bool {
    matches!(param, Some("1" | "t" | "T" | "true" | "True" | "TRUE"))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

impl Api {
    /// One pass of the namespace controller: every object in a Terminating namespace is
    /// deleted through the API (so pods bound to a node get their grace period and go when the
    /// node's final delete comes), and a namespace with nothing left is removed. Returns how
    /// many namespaces were removed.
    pub fn namespace_controller_once(&self) -> usize {
        let (namespaces, _) = self.store.list("namespaces", None);
        let mut removed = 0;
        for ns in namespaces.iter().filter(|n| n.pointer("/metadata/deletionTimestamp").is_some()) {
            let Some(name) = meta_str(ns, "name") else { continue };
            let mut left = 0;
            for res in resources::RESOURCES.iter().filter(|x| x.namespaced) {
                let (items, _) = self.store.list(&res.store_name(), Some(name));
                left += items.len();
                for it in items.iter().filter(|i| i.pointer("/metadata/deletionTimestamp").is_none()) {
                    let Some(n) = meta_str(it, "name") else { continue };
                    let prefix = if res.group.is_empty() {
                        format!("/api/{}", res.version)
                    } else {
                        format!("/apis/{}/{}", res.group, res.version)
                    };
                    let path = format!("{prefix}/namespaces/{name}/{}/{n}", res.plural);
                    let _ = self.handle(&Request { method: "DELETE".into(), path, ..Request::default() });
                }
            }
            if left == 0
                && self.store.delete::<StoreError>(&Key::new("namespaces", "", name), |_| Ok(())).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

/// Adds `Warning` headers to a complete response.
fn with_warnings(reply: Result<Reply, ApiError>, warnings: Vec<String>) -> Result<Reply, ApiError> {
    match reply {
        Ok(Reply::Full(resp)) => Ok(Reply::Full(resp.with_warnings(warnings))),
        other => other,
    }
}

/// The apiserver's `checkName` and `EnsureObjectNamespaceMatchesRequestNamespace` for the
/// object of a PUT or the result of a PATCH: a name other than the URL's is 400 BadRequest, and
/// so is a namespace other than the URL's (a missing one is the URL's). A PATCH cannot rename
/// or move an object.
fn check_identity(t: &Target, name: &str, obj: &Value) -> Result<(), ApiError> {
    let obj_name = meta_str(obj, "name").unwrap_or("");
    if obj_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({obj_name}) does not match the name on the URL ({name})"
        )));
    }
    let want = if t.resource.namespaced { t.namespace.as_deref().unwrap_or("") } else { "" };
    match meta_str(obj, "namespace").unwrap_or("") {
        "" => Ok(()),
        ns if ns == want || want.is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// A patch that sets another `kind` or `apiVersion`: kube cannot decode the result into the
/// resource's type, and answers 422 Invalid on the field `patch`.
fn check_patched_type(t: &Target, patched: &Value) -> Result<(), ApiError> {
    let r = t.resource;
    let kind_ok = patched.get("kind").is_none_or(|k| k.as_str() == Some(r.kind));
    let av_ok = patched.get("apiVersion").is_none_or(|a| a.as_str() == Some(&r.api_version()));
    if kind_ok && av_ok {
        return Ok(());
    }
    let kind = patched.get("kind").and_then(Value::as_str).unwrap_or(r.kind);
    let version = match patched.get("apiVersion").and_then(Value::as_str) {
        Some(av) => av.rsplit('/').next().unwrap_or(av),
        None => r.version,
    };
    let why = format!(
        "no kind \"{kind}\" is registered for version \"{version}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
    );
    let text = serde_json::to_string(patched).unwrap_or_default();
    let cause = validate::FieldError::invalid("patch", &json!(text), &why);
    Err(ApiError::from_status(validate::invalid_status("", "", &[cause])))
}

/// Runs NodeRestriction for a request of `user` (none for the server's own requests).
fn admit(
    user: Option<&User>,
    op: admission::Operation,
    t: &Target,
    sub: Option<&str>,
    name: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(user) = user else { return Ok(()) };
    let r = t.resource;
    admission::admit(
        user,
        &admission::Request {
            op,
            group: r.group,
            resource: r.plural,
            subresource: sub,
            namespace: t.namespace.as_deref().unwrap_or(""),
            name,
            old,
            new,
        },
    )
}

fn uid_of(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

impl Api {
    /// Opens the API over a store, creating the system namespaces when missing.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        let api = Api { store };
        for ns in SYSTEM_NAMESPACES {
            let key = Key::new("namespaces", "", ns);
            if api.store.get(&key).is_none() {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_rfc3339(),
                                 "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                api.store.create(key, obj)?;
            }
        }
        Ok(api)
    }

    /// Answers one request of the server itself (its controllers): no admission plugin applies.
    pub fn handle(&self, req: &Request) -> Reply {
        self.handle_as(req, None)
    }

    /// Answers one request authenticated as `user` (`None`: the server itself), which
    /// [`crate::admission`] admits on writes.
    pub fn handle_as(&self, req: &Request, user: Option<&User>) -> Reply {
        match route(&req.path) {
            Route::Document(doc) => {
                if req.method != "GET" {
                    return ApiError::method_not_allowed(&req.method).into();
                }
                Reply::Full(Response::json(200, &doc))
            }
            Route::Unknown => ApiError::no_route().into(),
            Route::Resource(t) => match self.handle_resource(req, &t, user) {
                Ok(r) => r,
                Err(e) => e.into(),
            },
        }
    }

    fn handle_resource(&self, req: &Request, t: &Target, user: Option<&User>) -> Result<Reply, ApiError> {
        let method = req.method.as_str();
        match (&t.name, t.sub.as_deref(), method) {
            (None, None, "GET") => {
                let watching = is_true(req.param("watch"));
                if watching {
                    return Ok(Reply::Watch(watch::WatchSpec::from_request(req, t.clone())?));
                }
                self.list(req, t)
            }
            (None, None, "POST") => self.create(req, t, user),
            (None, None, "DELETE") => self.delete_collection(req, t),
            (Some(name), Some("log"), "GET") => self.log(req, t, name),
            (Some(name), _, "GET") => {
                let obj = self.get_obj(t, name)?;
                Ok(Reply::Full(self.render_one(req, t, obj)))
            }
            (Some(name), sub, "PUT") => self.update(req, t, name, sub, user),
            (Some(name), sub, "PATCH") => self.patch(req, t, name, sub, user),
            (Some(name), None, "DELETE") => self.delete(req, t, name, user),
            _ => Err(ApiError::method_not_allowed(method)),
        }
    }

    fn key(&self, t: &Target, name: &str) -> Key {
        Key::new(&t.resource.store_name(), t.namespace.as_deref().unwrap_or(""), name)
    }

    fn get_obj(&self, t: &Target, name: &str) -> Result<Value, ApiError> {
        self.store
            .get(&self.key(t, name))
            .ok_or_else(|| ApiError::not_found(t.resource.plural, t.resource.group, name))
    }

    fn render_one(&self, req: &Request, t: &Target, obj: Value) -> Response {
        if wants_table(req) {
            if let Some(tab) = table(t.resource.kind, std::slice::from_ref(&obj), req.param("includeObject"))
            {
                return Response::json(200, &tab);
            }
        }
        Response::json(200, &obj)
    }

    fn list(&self, req: &Request, t: &Target) -> Result<Reply, ApiError> {
        let sel = Selectors::from_request(req)?;
        let store_name = t.resource.store_name();
        let (items, mut rv) = self.store.list(&store_name, t.namespace.as_deref());
        let page = Page::from_request(req)?;
        if let Some(token) = &page.after {
            // The continuation is consistent with the first page only if nothing of this
            // resource changed since; the history says whether anything did.
            let changed = self
                .store
                .changes_since(token.rv, &|c| c.key.resource == store_name)
                .map_or(true, |(changes, _)| !changes.is_empty());
            if changed {
                return Err(ApiError::expired(CONTINUE_EXPIRED.to_string()));
            }
            rv = token.rv;
        }
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|o| page.after.as_ref().is_none_or(|a| a.is_before(o)))
            .filter(|o| sel.matches(o))
            .collect();
        let mut list_meta = Map::new();
        list_meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if page.limit > 0 && items.len() > page.limit {
            let rest = items.split_off(page.limit);
            if let Some(last) = items.last() {
                list_meta.insert("continue".into(), json!(ContinueToken::after(rv, last).encode()));
                // Known only when no selector filters what is left.
                if sel.is_empty() {
                    list_meta.insert("remainingItemCount".into(), json!(rest.len()));
                }
            }
        }
        let list_meta = Value::Object(list_meta);
        if wants_table(req) {
            if let Some(mut tab) = table(t.resource.kind, &items, req.param("includeObject")) {
                json::set(&mut tab, "metadata", list_meta)?;
                return Ok(Reply::Full(Response::json(200, &tab)));
            }
        }
        let list = json!({
            "kind": format!("{}List", t.resource.kind), "apiVersion": t.resource.api_version(),
            "metadata": list_meta, "items": items,
        });
        Ok(Reply::Full(Response::json(200, &list)))
    }

    fn check_type(&self, t: &Target, obj: &Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str) {
            if k != t.resource.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind {k} in the body does not match the resource {}",
                    t.resource.plural
                )));
            }
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            if av != t.resource.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version {av} in the body does not match the expected API version {}",
                    t.resource.api_version()
                )));
            }
        }
        Ok(())
    }

    fn create(&self, req: &Request, t: &Target, user: Option<&User>) -> Result<Reply, ApiError> {
        let mut obj = parse_body(req)?;
        self.check_type(t, &obj)?;
        let r = t.resource;
        json::set(&mut obj, "kind", json!(r.kind))?;
        json::set(&mut obj, "apiVersion", json!(r.api_version()))?;
        if !obj.get("metadata").is_some_and(Value::is_object) {
            json::set(&mut obj, "metadata", json!({}))?;
        }
        let ns = t.namespace.clone().unwrap_or_default();
        if r.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace") {
                if body_ns != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            match self.store.get(&Key::new("namespaces", "", &ns)) {
                None => return Err(ApiError::not_found("namespaces", "", &ns)),
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    let name = meta_str(&obj, "name").unwrap_or("");
                    return Err(ApiError::denied(
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            r.plural
                        ),
                        r.plural,
                        r.group,
                        name,
                    ));
                }
                Some(_) => {}
            }
            json::set_at(&mut obj, &["metadata", "namespace"], json!(ns))?;
        }
        let mode =
            FieldValidation::from_query(req.param("fieldValidation")).map_err(ApiError::from_status)?;
        let warnings = check_fields(r.kind, &mut obj, mode).map_err(ApiError::from_status)?;
        let uid = uuid::Uuid::new_v4().to_string();
        validate::prepare_for_create(r.kind, &mut obj, &uid, SystemTime::now());
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        admit(user, admission::Operation::Create, t, None, &name, None, Some(&obj))?;
        validate::validate_create(r.kind, &obj).map_err(ApiError::from_status)?;
        check_annotations_size(r.kind, &name, &obj)?;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        if r.kind == "Pod" || r.kind == "Namespace" {
            json::set_at(&mut obj, &["metadata", "generation"], json!(1))?;
        }
        if req.param("dryRun").is_some() {
            return Ok(Reply::Full(Response::json(201, &obj).with_warnings(warnings)));
        }
        let key = Key::new(&r.store_name(), &ns, &name);
        let stored = self.store.create(key, obj).map_err(|e| store_err(e, t, &name))?;
        Ok(Reply::Full(Response::json(201, &stored).with_warnings(warnings)))
    }

    /// Carries the fields a write through the main resource or a subresource must not change.
    fn merge_for_write(
        t: &Target,
        sub: Option<&str>,
        old: &Value,
        mut new: Value,
    ) -> Result<Value, ApiError> {
        let r = t.resource;
        let has_status = r.subresources.contains(&"status");
        match sub {
            Some("status") => {
                // Only status changes through /status (and metadata labels/annotations).
                let mut out = old.clone();
                json::set(&mut out, "status", new.get("status").cloned().unwrap_or(Value::Null))?;
                for f in ["labels", "annotations"] {
                    if let Some(v) = new.pointer(&format!("/metadata/{f}")) {
                        json::set_at(&mut out, &["metadata", f], v.clone())?;
                    }
                }
                Ok(out)
            }
            _ => {
                if has_status {
                    json::set(&mut new, "status", old.get("status").cloned().unwrap_or(Value::Null))?;
                    if new.get("status").is_some_and(Value::is_null) {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                // Fields the server owns.
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "namespace",
                    "name",
                ] {
                    match old.pointer(&format!("/metadata/{f}")) {
                        Some(v) => json::set_at(&mut new, &["metadata", f], v.clone())?,
                        None => {
                            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                                m.remove(f);
                            }
                        }
                    }
                }
                if r.kind == "Pod" && new.get("spec") != old.get("spec") {
                    let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                    json::set_at(&mut new, &["metadata", "generation"], json!(g + 1))?;
                }
                Ok(new)
            }
        }
    }

    /// Computes the new object from the stored one and the request, outside the store lock.
    fn prepare_write(
        t: &Target,
        name: &str,
        sub: Option<&str>,
        old: &Value,
        make: &dyn Fn(&Value) -> Result<Value, ApiError>,
        user: Option<&User>,
    ) -> Result<Value, ApiError> {
        let r = t.resource;
        let mut new = make(old)?;
        if !new.is_object() || !new.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::bad_request("the object has no metadata"));
        }
        if let Some(uid) = uid_of(&new) {
            if Some(uid) != uid_of(old) {
                return Err(ApiError::invalid(
                    r.kind,
                    name,
                    "metadata.uid: Invalid value: field is immutable",
                ));
            }
        }
        if let Some(rv) = meta_str(&new, "resourceVersion") {
            if !rv.is_empty() && rv.parse::<u64>().ok() != object_rv(old) {
                return Err(store_err(StoreError::Conflict, t, name));
            }
        }
        json::set(&mut new, "kind", json!(r.kind))?;
        json::set(&mut new, "apiVersion", json!(r.api_version()))?;
        let mut merged = Self::merge_for_write(t, sub, old, new)?;
        validate::apply_defaults(r.kind, &mut merged);
        if r.kind == "Pod" && sub.is_none() {
            let qos = validate::qos_class(&merged);
            json::set_at(&mut merged, &["status", "qosClass"], json!(qos))?;
        }
        admit(user, admission::Operation::Update, t, sub, name, Some(old), Some(&merged))?;
        validate::validate_update(r.kind, old, &merged, sub == Some("status"))
            .map_err(ApiError::from_status)?;
        check_annotations_size(r.kind, name, &merged)?;
        Ok(merged)
    }

    /// Writes an object as kube-apiserver's optimistic update does: read it, compute the new
    /// object without holding the store lock (a patch's work depends on its body), then store it
    /// only if nothing changed it meanwhile, starting again (a few times) if something did.
    fn write(
        &self,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        make: &dyn Fn(&Value) -> Result<Value, ApiError>,
        dry_run: bool,
        user: Option<&User>,
    ) -> Result<Reply, ApiError> {
        let key = self.key(t, name);
        let r = t.resource;
        let mut attempt = 0;
        loop {
            let old = self.store.get(&key).ok_or_else(|| ApiError::not_found(r.plural, r.group, name))?;
            let merged = Self::prepare_write(t, name, sub, &old, make, user)?;
            if dry_run {
                return Ok(Reply::Full(Response::json(200, &merged)));
            }
            match self.store.update(key.clone(), merged, object_rv(&old)) {
                Ok(stored) => return Ok(Reply::Full(Response::json(200, &stored))),
                Err(StoreError::Conflict) if attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(store_err(e, t, name)),
            }
        }
    }

    fn update(
        &self,
        req: &Request,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        user: Option<&User>,
    ) -> Result<Reply, ApiError> {
        let mut body = parse_body(req)?;
        self.check_type(t, &body)?;
        let mode =
            FieldValidation::from_query(req.param("fieldValidation")).map_err(ApiError::from_status)?;
        let warnings = check_fields(t.resource.kind, &mut body, mode).map_err(ApiError::from_status)?;
        check_identity(t, name, &body)?;
        self.exists(t, name)?;
        with_warnings(
            self.write(t, name, sub, &|_| Ok(body.clone()), req.param("dryRun").is_some(), user),
            warnings,
        )
    }

    fn exists(&self, t: &Target, name: &str) -> Result<(), ApiError> {
        self.get_obj(t, name).map(|_| ())
    }

    fn patch(
        &self,
        req: &Request,
        t: &Target,
        name: &str,
        sub: Option<&str>,
        user: Option<&User>,
    ) -> Result<Reply, ApiError> {
        let ct = req.header("content-type").unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        let kind = match ct.as_str() {
            "application/json-patch+json" => 0,
            "application/merge-patch+json" => 1,
            "application/strategic-merge-patch+json" => 2,
            _ => return Err(ApiError::unsupported_media_type(&ct)),
        };
        let patch: Value = serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        self.exists(t, name)?;
        let rkind = t.resource.kind;
        let mode =
            FieldValidation::from_query(req.param("fieldValidation")).map_err(ApiError::from_status)?;
        let warnings = std::cell::RefCell::new(Vec::new());
        let reply = self.write(
            t,
            name,
            sub,
            &|old| {
                let mut patched = match kind {
                    0 => crate::patch::apply_json_patch(old, &patch).map_err(|e| match e {
                        PatchError::TooManyOperations { .. } => ApiError::entity_too_large(e.to_string()),
                        PatchError::CopyTooLarge { .. } | PatchError::TooDeep { .. } => {
                            ApiError::unprocessable(e.to_string())
                        }
                        PatchError::TooMuchWork { .. } => ApiError::entity_too_large(e.to_string()),
                        e => ApiError::invalid(rkind, name, &e.to_string()),
                    })?,
                    1 => crate::patch::apply_merge_patch(old, &patch),
                    _ => {
                        let keys = crate::patch::k8s_merge_keys(rkind);
                        crate::patch::apply_strategic_merge_patch(old, &patch, &keys).map_err(
                            |e| match e {
                                // As kube, which cannot decode the result: 422 on the field `patch`.
                                crate::patch::PatchError::DirectiveOnScalar(_) => {
                                    ApiError::from_status(validate::invalid_status(
                                        "",
                                        "",
                                        &[validate::FieldError::invalid("patch", &patch, &e.to_string())],
                                    ))
                                }
                                e => ApiError::bad_request(e.to_string()),
                            },
                        )?
                    }
                };
                check_identity(t, name, &patched)?;
                check_patched_type(t, &patched)?;
                *warnings.borrow_mut() =
                    check_fields(rkind, &mut patched, mode).map_err(ApiError::from_status)?;
                // A patch without a resourceVersion is unconditional.
                if patch.pointer("/metadata/resourceVersion").is_none() {
                    if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                }
                Ok(patched)
            },
            req.param("dryRun").is_some(),
            user,
        );
        with_warnings(reply, warnings.into_inner())
    }

    fn delete(&self, req: &Request, t: &Target, name: &str, user: Option<&User>) -> Result<Reply, ApiError> {
        let opts: Value = if req.body.is_empty() { json!({}) } else { parse_body(req)? };
        let grace_param = req.param("gracePeriodSeconds").and_then(|g| g.parse::<i64>().ok());
        let grace_opt = opts.get("gracePeriodSeconds").and_then(Value::as_i64).or(grace_param);
        let pre_uid = opts.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        let pre_rv =
            opts.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        let r = t.resource;
        let key = self.key(t, name);
        let check = |old: &Value| -> Result<(), ApiError> {
            if let Some(u) = &pre_uid {
                if uid_of(old) != Some(u.as_str()) {
                    return Err(ApiError::conflict(
                        r.plural,
                        r.group,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                            uid_of(old).unwrap_or("")
                        ),
                    ));
                }
            }
            if let Some(v) = &pre_rv {
                if meta_str(old, "resourceVersion") != Some(v.as_str()) {
                    return Err(ApiError::conflict(
                        r.plural,
                        r.group,
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {v}"),
                    ));
                }
            }
            Ok(())
        };
        let old = self.get_obj(t, name)?;
        admit(user, admission::Operation::Delete, t, None, name, Some(&old), None)?;
        if r.kind == "Namespace" && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError::forbidden("namespaces", name, "this namespace may not be deleted"));
        }
        if r.kind == "Namespace" {
            // Terminating first; the namespace controller empties it and then removes it.
            check(&old)?;
            let stored = self.store.modify::<ApiError>(&key, |cur| {
                check(cur)?;
                if cur.pointer("/metadata/deletionTimestamp").is_some() {
                    return Ok(None);
                }
                let mut new = cur.clone();
                json::set_at(&mut new, &["metadata", "deletionTimestamp"], json!(now_rfc3339()))?;
                json::set(&mut new, "status", json!({"phase": "Terminating"}))?;
                Ok(Some(new))
            })?;
            return Ok(Reply::Full(Response::json(200, &stored)));
        }
        if r.kind == "Pod" {
            let spec_grace =
                old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
            let grace = grace_opt.unwrap_or(spec_grace).max(0);
            let bound = old.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            let finished =
                matches!(old.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
            if bound && !finished && grace > 0 {
                check(&old)?;
                let stored = self.store.modify::<ApiError>(&key, |cur| {
                    check(cur)?;
                    let current = cur.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
                    if current.is_some_and(|c| c <= grace) {
                        return Ok(None);
                    }
                    let mut new = cur.clone();
                    let at = SystemTime::now() + Duration::from_secs(grace.unsigned_abs());
                    let at = json!(rfc3339::format_time(rfc3339::unix_seconds(at)));
                    json::set_at(&mut new, &["metadata", "deletionTimestamp"], at)?;
                    json::set_at(&mut new, &["metadata", "deletionGracePeriodSeconds"], json!(grace))?;
                    Ok(Some(new))
                })?;
                return Ok(Reply::Full(Response::json(200, &stored)));
            }
        }
        let gone = self.store.delete::<ApiError>(&key, check).map_err(|e| {
            if e.code == 500 && e.message.contains("not found") {
                ApiError::not_found(r.plural, r.group, name)
            } else {
                e
            }
        })?;

        Ok(Reply::Full(Response::json(200, &gone)))
    }

    fn delete_collection(&self, req: &Request, t: &Target) -> Result<Reply, ApiError> {
        let sel = Selectors::from_request(req)?;
        let (items, _) = self.store.list(&t.resource.store_name(), t.namespace.as_deref());
        let mut deleted = Vec::new();
        for it in items.into_iter().filter(|o| sel.matches(o)) {
            let ns = meta_str(&it, "namespace").unwrap_or("").to_string();
            if let Some(n) = meta_str(&it, "name") {
                let key = Key::new(&t.resource.store_name(), &ns, n);
                if let Ok(v) = self.store.delete::<StoreError>(&key, |_| Ok(())) {
                    deleted.push(v);
                }
            }
        }
        let list = json!({"kind": format!("{}List", t.resource.kind), "apiVersion": t.resource.api_version(),
                          "metadata": {"resourceVersion": self.store.rv().to_string()}, "items": deleted});
        Ok(Reply::Full(Response::json(200, &list)))
    }

    fn log(&self, req: &Request, t: &Target, name: &str) -> Result<Reply, ApiError> {
        let pod = self.get_obj(t, name)?;
        let ns = t.namespace.clone().unwrap_or_default();
        let container = match req.param("container") {
            // kube-apiserver's rule (pod LogLocation): a named container must be one of the
            // pod's, init and ephemeral ones included.
            Some(c) => {
                let known = ["containers", "initContainers", "ephemeralContainers"].iter().any(|list| {
                    pod.pointer(&format!("/spec/{list}"))
                        .and_then(Value::as_array)
                        .is_some_and(|cs| cs.iter().any(|k| k.get("name").and_then(Value::as_str) == Some(c)))
                });
                if !known {
                    return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
                }
                c.to_string()
            }
            None => pod
                .pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ApiError::bad_request("the pod has no containers"))?,
        };
        let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
        else {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled"
            )));
        };
        let node = self
            .store
            .get(&Key::new("nodes", "", node_name))
            .ok_or_else(|| ApiError::not_found("nodes", "", node_name))?;
        crate::server::logs::LogSpec::new(req, &node, &ns, name, &container).map(Reply::Log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_parameters_read_like_go() {
        for yes in ["1", "t", "T", "true", "True", "TRUE"] {
            assert!(is_true(Some(yes)), "{yes}");
        }
        for no in ["0", "false", "False", "yes", "", "tRUE"] {
            assert!(!is_true(Some(no)), "{no}");
        }
        assert!(!is_true(None));
    }

    fn req(method: &str, path: &str, body: &str) -> Request {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.into(),
            path: p.into(),
            query: crate::server::http::parse_query(q),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn full(r: Reply) -> (u16, Value) {
        match r {
            Reply::Full(resp) => (resp.status, serde_json::from_slice(&resp.body).unwrap()),
            _ => panic!("not a full reply"),
        }
    }

    fn with_type(mut r: Request, ct: &str) -> Request {
        r.headers = vec![("content-type".into(), ct.into())];
        r
    }

    /// Issue 13 finding 7: with n1's credential, removing an admin's taint, adding restricted
    /// labels through the Node or its status, and re-registering with them are all 403.
    #[test]
    fn node_restriction_holds_through_every_write() {
        let api = Api::new(Store::in_memory()).unwrap();
        let n1 = User { name: "system:node:n1".into(), groups: vec!["system:nodes".into()] };
        let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"kubernetes.io/hostname":"n1","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64","beta.kubernetes.io/os":"linux","beta.kubernetes.io/arch":"amd64"}},"spec":{}}"#;
        let (code, st) = full(api.handle_as(&req("POST", "/api/v1/nodes", node), Some(&n1)));
        assert_eq!(code, 201, "{st}");
        let taint = r#"{"spec":{"taints":[{"key":"dedicated","value":"db","effect":"NoSchedule"}]}}"#;
        let merge = "application/merge-patch+json";
        let (code, _) = full(api.handle(&with_type(req("PATCH", "/api/v1/nodes/n1", taint), merge)));
        assert_eq!(code, 200);
        let as_n1 = |r: Request| full(api.handle_as(&r, Some(&n1)));
        let untaint = r#"[{"op":"remove","path":"/spec/taints"}]"#;
        let (code, st) =
            as_n1(with_type(req("PATCH", "/api/v1/nodes/n1", untaint), "application/json-patch+json"));
        assert_eq!((code, st["reason"].as_str()), (403, Some("Forbidden")), "{st}");
        assert_eq!(st["message"], "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints");
        for path in ["/api/v1/nodes/n1", "/api/v1/nodes/n1/status"] {
            for label in ["node-role.kubernetes.io/control-plane", "node-restriction.kubernetes.io/x"] {
                let body = format!(r#"{{"metadata":{{"labels":{{"{label}":"yes"}}}}}}"#);
                let (code, st) =
                    as_n1(with_type(req("PATCH", path, &body), "application/strategic-merge-patch+json"));
                assert_eq!(code, 403, "{path} {label}: {st}");
                assert_eq!(
                    st["message"],
                    format!("nodes \"n1\" is forbidden: is not allowed to modify labels: {label}")
                );
            }
        }
        // Its own status and harmless labels still go through.
        let beat = r#"{"metadata":{"labels":{"example.com/rack":"r1"}},"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
        let (code, st) = as_n1(with_type(
            req("PATCH", "/api/v1/nodes/n1/status", beat),
            "application/strategic-merge-patch+json",
        ));
        assert_eq!(code, 200, "{st}");
        let (_, stored) = full(api.handle(&req("GET", "/api/v1/nodes/n1", "")));
        assert_eq!(stored["spec"]["taints"][0]["key"], "dedicated");
        assert!(stored["metadata"]["labels"].get("node-role.kubernetes.io/control-plane").is_none());
        // Deleting its Node is allowed; coming back with a role label is not.
        assert_eq!(as_n1(req("DELETE", "/api/v1/nodes/n1", "")).0, 200);
        let relabelled = node.replace(
            "\"kubernetes.io/hostname\"",
            "\"node-role.kubernetes.io/master\":\"\",\"kubernetes.io/hostname\"",
        );
        let (code, st) = as_n1(req("POST", "/api/v1/nodes", &relabelled));
        assert_eq!(code, 403, "{st}");
        assert_eq!(st["message"], "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/master");
        assert_eq!(full(api.handle(&req("GET", "/api/v1/nodes/n1", ""))).0, 404);
        assert_eq!(as_n1(req("POST", "/api/v1/nodes", node)).0, 201);
        // Pod labels do not change through the status of a pod bound to the node.
        let pod = r#"{"metadata":{"name":"p","labels":{"app":"a"}},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod))).0, 201);
        let relabel = r#"{"metadata":{"labels":{"app":"stolen"}},"status":{"phase":"Running"}}"#;
        let (code, st) =
            as_n1(with_type(req("PATCH", "/api/v1/namespaces/default/pods/p/status", relabel), merge));
        assert_eq!(
            (code, st["message"].as_str()),
            (403, Some("pods \"p\" is forbidden: node \"n1\" cannot update labels through pod status"))
        );
        let running = r#"{"status":{"phase":"Running"}}"#;
        let (code, st) =
            as_n1(with_type(req("PATCH", "/api/v1/namespaces/default/pods/p/status", running), merge));
        assert_eq!(code, 200, "{st}");
    }

    /// Issue 13 finding 9: patches and PUTs that would rename, move or retype an object are
    /// refused instead of silently dropped; `$patch: delete` on a scalar is 422 and bumps nothing.
    #[test]
    fn identity_changes_are_refused_not_dropped() {
        let api = Api::new(Store::in_memory()).unwrap();
        let pod = r#"{"metadata":{"name":"p"},"spec":{"activeDeadlineSeconds":30,"containers":[{"name":"c","image":"i"}]}}"#;
        let (_, created) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod)));
        let path = "/api/v1/namespaces/default/pods/p";
        let jp = "application/json-patch+json";
        let mp = "application/merge-patch+json";
        let smp = "application/strategic-merge-patch+json";
        let cases = [
            (
                jp,
                r#"[{"op":"replace","path":"/metadata/name","value":"q"}]"#,
                "the name of the object (q) does not match the name on the URL (p)",
            ),
            (
                jp,
                r#"[{"op":"remove","path":"/metadata/name"}]"#,
                "the name of the object () does not match the name on the URL (p)",
            ),
            (
                mp,
                r#"{"metadata":{"name":"q"}}"#,
                "the name of the object (q) does not match the name on the URL (p)",
            ),
            (
                smp,
                r#"{"metadata":{"name":"q"}}"#,
                "the name of the object (q) does not match the name on the URL (p)",
            ),
            (
                jp,
                r#"[{"op":"replace","path":"/metadata/namespace","value":"kube-system"}]"#,
                "the namespace of the provided object does not match the namespace sent on the request",
            ),
            (
                mp,
                r#"{"metadata":{"namespace":"kube-system"}}"#,
                "the namespace of the provided object does not match the namespace sent on the request",
            ),
        ];
        for (ct, body, message) in cases {
            let (code, st) = full(api.handle(&with_type(req("PATCH", path, body), ct)));
            assert_eq!(
                (code, st["reason"].as_str(), st["message"].as_str()),
                (400, Some("BadRequest"), Some(message)),
                "{ct} {body}"
            );
        }
        for (ct, body) in [
            (mp, r#"{"kind":"Node"}"#),
            (mp, r#"{"apiVersion":"v2"}"#),
            (jp, r#"[{"op":"replace","path":"/kind","value":"Foo"}]"#),
        ] {
            let (code, st) = full(api.handle(&with_type(req("PATCH", path, body), ct)));
            assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{body}: {st}");
            assert_eq!(st["details"]["causes"][0]["field"], "patch");
            assert!(st["message"].as_str().unwrap().contains("is registered for version"), "{st}");
        }
        let (code, st) = full(api.handle(&with_type(
            req("PATCH", path, r#"{"spec":{"activeDeadlineSeconds":{"$patch":"delete"}}}"#),
            smp,
        )));
        assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{st}");
        // A PUT under another name or namespace.
        let mut renamed = created.clone();
        renamed["metadata"]["name"] = json!("q");
        let (code, st) = full(api.handle(&req("PUT", path, &renamed.to_string())));
        assert_eq!(
            (code, st["message"].as_str()),
            (400, Some("the name of the object (q) does not match the name on the URL (p)"))
        );
        let mut moved = created.clone();
        moved["metadata"]["namespace"] = json!("kube-system");
        assert_eq!(full(api.handle(&req("PUT", path, &moved.to_string()))).0, 400);
        // Nothing changed: same generation, same deadline; the name stays the URL's.
        let (_, now) = full(api.handle(&req("GET", path, "")));
        assert_eq!(now["metadata"]["generation"], created["metadata"]["generation"]);
        assert_eq!(now["spec"]["activeDeadlineSeconds"], 30);
        assert_eq!(now["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
        // Patches that keep the identity (or repeat it) still work.
        let same = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"default","labels":{"a":"b"}}}"#;
        assert_eq!(full(api.handle(&with_type(req("PATCH", path, same), mp))).0, 200);
    }

    /// Issue 13 finding 8 at the API: bad labels are 422, bad selectors 400.
    #[test]
    fn labels_and_selectors_are_validated_at_the_api() {
        let api = Api::new(Store::in_memory()).unwrap();
        for labels in [r#"{"bad key!":"v"}"#, r#"{"":"v"}"#, r#"{"a/b/c":"v"}"#] {
            let pod = format!(
                r#"{{"metadata":{{"name":"p","labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
            );
            let (code, st) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", &pod)));
            assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{labels}: {st}");
            assert_eq!(st["details"]["causes"][0]["field"], "metadata.labels");
        }
        let ev =
            "{\"metadata\":{\"name\":\"e\\r\\nX: y\"},\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"p\"}}";
        let (code, st) = full(api.handle(&req("POST", "/api/v1/namespaces/default/events", ev)));
        assert_eq!(code, 422, "{st}");
        let pod = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod))).0, 201);
        let merge = "application/merge-patch+json";
        let long = "v".repeat(300);
        let body = format!(r#"{{"metadata":{{"labels":{{"k":"{long}"}}}}}}"#);
        let (code, _) =
            full(api.handle(&with_type(req("PATCH", "/api/v1/namespaces/default/pods/p", &body), merge)));
        assert_eq!(code, 422);
        for sel in ["labelSelector=a%2Fb%2Fc%3Dx", &format!("labelSelector=k%3D{long}"), "labelSelector=%3Dx"]
        {
            let (code, st) = full(api.handle(&req("GET", &format!("/api/v1/pods?{sel}"), "")));
            assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")), "{sel}: {st}");
        }
    }

    #[test]
    fn non_objects_where_objects_belong_are_errors_not_panics() {
        let api = Api::new(Store::in_memory()).unwrap();
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        let (code, _) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod)));
        assert_eq!(code, 201);
        for bad in ["[1, 2]", "\"text\"", "null", "5"] {
            for (method, path) in [
                ("POST", "/api/v1/namespaces/default/pods"),
                ("PUT", "/api/v1/namespaces/default/pods/p"),
                ("PUT", "/api/v1/namespaces/default/pods/p/status"),
            ] {
                let (code, body) = full(api.handle(&req(method, path, bad)));
                assert_eq!(code, 400, "{method} {path} {bad}: {body}");
            }
        }
        // Below the top level: the write helpers refuse members that are not objects.
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods/p/status") else { panic!() };
        let old = json!({"kind": "Pod", "metadata": "not an object", "status": {}});
        let new = json!({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Running"}});
        let e = Api::merge_for_write(&t, Some("status"), &old, new.clone()).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "metadata is not a JSON object"));
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods/p") else { panic!() };
        let old = json!({"kind": "Pod", "metadata": {"uid": "u"}, "spec": {"a": 1}});
        let new = json!({"metadata": ["array"], "spec": {"a": 2}});
        let e = Api::merge_for_write(&t, None, &old, new).unwrap_err();
        assert_eq!(e.code, 400, "{e:?}");
    }

    #[test]
    fn routes_resolve_paths() {
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods/p/status") else { panic!() };
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.sub.as_deref()),
            ("pods", Some("default"), Some("p"), Some("status"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/kube-system") else { panic!() };
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let Route::Resource(t) = route("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
        else {
            panic!()
        };
        assert_eq!(t.resource.kind, "Lease");
        assert_eq!(route("/api/v1/pods/x/y/z"), Route::Unknown);
        assert_eq!(route("/api/v1/namespaces/default/nodes"), Route::Unknown);
        assert_eq!(route("/api/v1/namespaces/default/pods/p/exec"), Route::Unknown);
        assert!(matches!(route("/api/v1"), Route::Document(_)));
    }

    #[test]
    fn lists_page_with_limit_and_continue() {
        let api = Api::new(Store::in_memory()).unwrap();
        for (ns, name) in
            [("default", "a"), ("default", "b"), ("kube-system", "c"), ("default", "d"), ("kube-public", "e")]
        {
            let pod = format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"x":"{name}"}}}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
            );
            let (code, _) = full(api.handle(&req("POST", &format!("/api/v1/namespaces/{ns}/pods"), &pod)));
            assert_eq!(code, 201);
        }
        let names = |l: &Value| -> Vec<String> {
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let mut seen = Vec::new();
        let mut path = "/api/v1/pods?limit=2".to_string();
        let mut first_rv = None;
        loop {
            let (code, page) = full(api.handle(&req("GET", &path, "")));
            assert_eq!(code, 200, "{page}");
            let rv = page["metadata"]["resourceVersion"].clone();
            assert_eq!(
                *first_rv.get_or_insert(rv.clone()),
                rv,
                "every page carries the first page's version"
            );
            seen.extend(names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(c) => {
                    assert_eq!(page["items"].as_array().unwrap().len(), 2);
                    assert!(page["metadata"]["remainingItemCount"].as_u64().is_some(), "{page}");
                    path = format!("/api/v1/pods?limit=2&continue={c}");
                }
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "d", "e", "c"], "namespace/name order, each once");
        // With a selector the remaining count is unknown; no limit means everything.
        let (_, page) = full(api.handle(&req("GET", "/api/v1/pods?limit=1&labelSelector=x%21%3Da", "")));
        assert_eq!(names(&page), ["b"]);
        assert!(
            page["metadata"]["continue"].is_string() && page["metadata"].get("remainingItemCount").is_none()
        );
        let (_, all) = full(api.handle(&req("GET", "/api/v1/pods?limit=0", "")));
        assert_eq!(names(&all).len(), 5);
        assert!(all["metadata"].get("continue").is_none());
        // A change after the first page makes its token too old: 410 Expired.
        let (_, page) = full(api.handle(&req("GET", "/api/v1/pods?limit=2", "")));
        let token = page["metadata"]["continue"].as_str().unwrap().to_string();
        let (code, _) = full(api.handle(&req("DELETE", "/api/v1/namespaces/kube-public/pods/e", "")));
        assert_eq!(code, 200);
        let (code, st) = full(api.handle(&req("GET", &format!("/api/v1/pods?limit=2&continue={token}"), "")));
        assert_eq!((code, st["reason"].as_str()), (410, Some("Expired")), "{st}");
        assert_eq!(st["message"], CONTINUE_EXPIRED);
        // Changes to other resources do not matter.
        let (_, page) = full(api.handle(&req("GET", "/api/v1/pods?limit=1", "")));
        let token = page["metadata"]["continue"].as_str().unwrap().to_string();
        let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"other"}}"#;
        assert_eq!(full(api.handle(&req("POST", "/api/v1/namespaces", ns))).0, 201);
        let (code, _) = full(api.handle(&req("GET", &format!("/api/v1/pods?limit=1&continue={token}"), "")));
        assert_eq!(code, 200);
        for bad in ["continue=%%%", "continue=bm90IGpzb24", "limit=lots"] {
            let (code, st) = full(api.handle(&req("GET", &format!("/api/v1/pods?{bad}"), "")));
            assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")), "{bad}: {st}");
        }
    }

    #[test]
    fn pod_crud_with_conflicts_and_status_errors() {
        let api = Api::new(Store::in_memory()).unwrap();
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"app":"a"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        let (code, created) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod)));
        assert_eq!(code, 201);
        assert_eq!(created["status"]["phase"], "Pending");
        let (code, again) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod)));
        assert_eq!((code, again["reason"].as_str()), (409, Some("AlreadyExists")));
        let (code, nons) = full(api.handle(&req("POST", "/api/v1/namespaces/nope/pods", pod)));
        assert_eq!((code, nons["message"].as_str()), (404, Some("namespaces \"nope\" not found")));
        let (code, bad) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", "{not json")));
        assert_eq!((code, bad["reason"].as_str()), (400, Some("BadRequest")));
        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let (code, c) =
            full(api.handle(&req("PUT", "/api/v1/namespaces/default/pods/p", &stale.to_string())));
        assert_eq!((code, c["reason"].as_str()), (409, Some("Conflict")));
        let (code, list) = full(api.handle(&req("GET", "/api/v1/pods?labelSelector=app%3Da", "")));
        assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 1));
        let (_, list) = full(api.handle(&req("GET", "/api/v1/pods?labelSelector=app%3Db", "")));
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
        let (_, list) = full(api.handle(&req("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3D", "")));
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let (code, _) = full(api.handle(&req(
            "PATCH",
            "/api/v1/namespaces/default/pods/p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        )));
        assert_eq!(code, 415);
        let mut patch =
            req("PATCH", "/api/v1/namespaces/default/pods/p", r#"{"metadata":{"labels":{"x":"y"}}}"#);
        patch.headers = vec![("content-type".into(), "application/merge-patch+json".into())];
        let (code, patched) = full(api.handle(&patch));
        assert_eq!((code, patched["metadata"]["labels"]["x"].as_str()), (200, Some("y")));
        let (code, _) = full(api.handle(&req("DELETE", "/api/v1/namespaces/default/pods/p", "")));
        assert_eq!(code, 200);
        let (code, gone) = full(api.handle(&req("GET", "/api/v1/namespaces/default/pods/p", "")));
        assert_eq!((code, gone["reason"].as_str()), (404, Some("NotFound")));
    }

    #[test]
    fn system_namespaces_stay_and_others_take_their_objects_along() {
        let api = Api::new(Store::in_memory()).unwrap();
        let (code, f) = full(api.handle(&req("DELETE", "/api/v1/namespaces/default", "")));
        assert_eq!((code, f["reason"].as_str()), (403, Some("Forbidden")));
        let (code, _) =
            full(api.handle(&req("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"tmp"}}"#)));
        assert_eq!(code, 201);
        let pod = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(full(api.handle(&req("POST", "/api/v1/namespaces/tmp/pods", pod))).0, 201);
        let bound =
            r#"{"metadata":{"name":"b"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}"#;
        let (_, bound) = full(api.handle(&req("POST", "/api/v1/namespaces/tmp/pods", bound)));
        let (code, ns) = full(api.handle(&req("DELETE", "/api/v1/namespaces/tmp", "")));
        assert_eq!(code, 200);
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(ns["metadata"]["deletionTimestamp"].is_string());
        let (code, f) = full(api.handle(&req("POST", "/api/v1/namespaces/tmp/pods", pod)));
        assert_eq!((code, f["reason"].as_str()), (403, Some("Forbidden")));
        assert_eq!(
            f["message"],
            "pods \"p\" is forbidden: unable to create new content in namespace tmp because it is being terminated"
        );
        // The controller deletes the unbound pod at once and marks the bound one for graceful
        // deletion; the namespace stays until the node's final delete.
        assert_eq!(api.namespace_controller_once(), 0);
        assert_eq!(full(api.handle(&req("GET", "/api/v1/namespaces/tmp/pods/p", ""))).0, 404);
        let (_, b) = full(api.handle(&req("GET", "/api/v1/namespaces/tmp/pods/b", "")));
        assert!(b["metadata"]["deletionTimestamp"].is_string(), "{b}");
        assert_eq!(api.namespace_controller_once(), 0);
        let final_delete =
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": bound["metadata"]["uid"]}}).to_string();
        assert_eq!(full(api.handle(&req("DELETE", "/api/v1/namespaces/tmp/pods/b", &final_delete))).0, 200);
        assert_eq!(api.namespace_controller_once(), 1);
        assert_eq!(full(api.handle(&req("GET", "/api/v1/namespaces/tmp", ""))).0, 404);
    }

    #[test]
    fn secrets_merge_string_data_default_their_type_and_are_validated() {
        let api = Api::new(Store::in_memory()).unwrap();
        let path = "/api/v1/namespaces/default/secrets";
        let body = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"a":"YQ=="},"stringData":{"b":"bee"}}"#;
        let (code, created) = full(api.handle(&req("POST", &format!("{path}?fieldValidation=Strict"), body)));
        assert_eq!(code, 201, "{created}");
        assert_eq!(created["data"], json!({"a": "YQ==", "b": "YmVl"}));
        assert_eq!(created["type"], "Opaque");
        assert!(created.get("stringData").is_none());
        let (_, got) = full(api.handle(&req("GET", &format!("{path}/s"), "")));
        assert_eq!(got["data"], created["data"]);
        // Not base64: the decoder's 400, as Go's []byte decoding words it.
        let (code, st) =
            full(api.handle(&req("POST", path, r#"{"metadata":{"name":"b"},"data":{"a":"not base64!"}}"#)));
        assert_eq!((code, st["message"].as_str()), (400, Some("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3")));
        let (code, st) = full(api.handle(&req("POST", path, r#"{"metadata":{"name":"b"},"data":{"a":5}}"#)));
        assert_eq!(code, 400, "{st}");
        assert!(
            st["message"].as_str().unwrap().ends_with(
                "json: cannot unmarshal number 5 into Go struct field Secret.data of type []uint8"
            ),
            "{st}"
        );
        // A bad key and a docker config that is not JSON: 422 with both causes.
        let bad = r#"{"metadata":{"name":"d"},"type":"kubernetes.io/dockerconfigjson","data":{".dockerconfigjson":"e30K"},"stringData":{"no way":"x",".dockerconfigjson":"{"}}"#;
        let (code, st) = full(api.handle(&req("POST", path, bad)));
        assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{st}");
        let fields: Vec<&str> = st["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["data[no way]", "data[.dockerconfigjson]"]);
        assert!(st["message"].as_str().unwrap().starts_with("Secret \"d\" is invalid: ["), "{st}");
        // The type stays; merge patches go through the same merge.
        let mut patch = req("PATCH", &format!("{path}/s"), r#"{"type":"kubernetes.io/tls"}"#);
        patch.headers = vec![("content-type".into(), "application/merge-patch+json".into())];
        let (code, st) = full(api.handle(&patch));
        assert_eq!(code, 422, "{st}");
        assert_eq!(
            st["details"]["causes"][0]["message"],
            "Invalid value: \"kubernetes.io/tls\": field is immutable"
        );
        patch.body = br#"{"stringData":{"a":"new"}}"#.to_vec();
        let (code, patched) = full(api.handle(&patch));
        assert_eq!((code, &patched["data"]), (200, &json!({"a": "bmV3", "b": "YmVl"})), "{patched}");
        // A PUT without a type keeps Opaque, so it is no change of type.
        let mut put = patched.clone();
        put.as_object_mut().unwrap().remove("type");
        let (code, st) = full(api.handle(&req("PUT", &format!("{path}/s"), &put.to_string())));
        assert_eq!(code, 200, "{st}");
        let (code, list) = full(api.handle(&req("GET", "/api/v1/secrets?fieldSelector=type%3DOpaque", "")));
        assert_eq!(
            (code, list["kind"].as_str(), list["items"].as_array().map(Vec::len)),
            (200, Some("SecretList"), Some(1))
        );
        let (code, _) = full(api.handle(&req("DELETE", &format!("{path}/s"), "")));
        assert_eq!(code, 200);
        assert_eq!(full(api.handle(&req("GET", &format!("{path}/s"), ""))).0, 404);
    }

    #[test]
    fn bound_pods_are_deleted_gracefully_and_finally_with_a_uid_precondition() {
        let api = Api::new(Store::in_memory()).unwrap();
        let pod =
            r#"{"metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}"#;
        let (_, created) = full(api.handle(&req("POST", "/api/v1/namespaces/default/pods", pod)));
        let (code, terminating) = full(api.handle(&req("DELETE", "/api/v1/namespaces/default/pods/p", "")));
        assert_eq!(code, 200);
        assert!(terminating["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
        let wrong = r#"{"gracePeriodSeconds":0,"preconditions":{"uid":"other"}}"#;
        let (code, c) = full(api.handle(&req("DELETE", "/api/v1/namespaces/default/pods/p", wrong)));
        assert_eq!((code, c["reason"].as_str()), (409, Some("Conflict")));
        let right = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": created["metadata"]["uid"]}})
            .to_string();
        let (code, _) = full(api.handle(&req("DELETE", "/api/v1/namespaces/default/pods/p", &right)));
        assert_eq!(code, 200);
        assert_eq!(full(api.handle(&req("GET", "/api/v1/namespaces/default/pods/p", ""))).0, 404);
    }

    fn patch_req(path: &str, ct: &str, body: &str) -> Request {
        let mut r = req("PATCH", path, body);
        r.headers = vec![("content-type".into(), ct.into())];
        r
    }

    /// Issue 13, findings 1, 3 and 6 through the API: amplifying JSON patches, oversized
    /// annotations and objects too deep to store are refused with kube-apiserver's codes.
    #[test]
    fn patches_objects_and_annotations_over_the_limits_are_refused() {
        let api = Api::new(Store::in_memory()).unwrap();
        let lease = r#"{"metadata":{"name":"n1"},"spec":{"holderIdentity":"n1","leaseDurationSeconds":40}}"#;
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert_eq!(full(api.handle(&req("POST", leases, lease))).0, 201);
        let path = format!("{leases}/n1");
        let chain: Vec<Value> =
            (0..30).map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/a{i}")})).collect();
        let ct = "application/json-patch+json";
        let (code, st) = full(api.handle(&patch_req(&path, ct, &Value::Array(chain).to_string())));
        assert_eq!(code, 422, "{st}");
        assert!(st["message"].as_str().unwrap().contains("accumulated size increase of copy"), "{st}");
        let many =
            Value::Array(vec![json!({"op": "test", "path": "/spec/holderIdentity", "value": "n1"}); 10_001]);
        let (code, st) = full(api.handle(&patch_req(&path, ct, &many.to_string())));
        assert_eq!((code, st["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{st}");
        // The object is as it was.
        let (_, got) = full(api.handle(&req("GET", &path, "")));
        assert!(got["spec"].get("a0").is_none());
        // Annotations: 256 KiB in all.
        let ann = |n: usize| json!({"metadata": {"annotations": {"k": "v".repeat(n)}}}).to_string();
        let mp = "application/merge-patch+json";
        let (code, st) = full(api.handle(&patch_req(&path, mp, &ann(MAX_ANNOTATIONS_BYTES))));
        assert_eq!(code, 422, "{st}");
        assert!(st["message"].as_str().unwrap().contains("may not be more than 262144 bytes"), "{st}");
        assert_eq!(full(api.handle(&patch_req(&path, mp, &ann(MAX_ANNOTATIONS_BYTES - 1)))).0, 200);
        // An object over 1.5 MiB: 413.
        let big =
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"holderIdentity": "x".repeat(1536 * 1024)}});
        let (code, st) = full(api.handle(&patch_req(&path, mp, &big.to_string())));
        assert_eq!((code, st["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{st}");
        // Too deep: a body is refused 400 as it is read, a patch result 422.
        let mut deep = json!({});
        for _ in 0..crate::store::MAX_DEPTH {
            deep = json!({"x": deep});
        }
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": deep}).to_string();
        let (code, st) = full(api.handle(&req("POST", "/api/v1/namespaces/default/events", &ev)));
        assert_eq!(code, 400, "{st}");
        let deep_patch = json!([{"op": "add", "path": "/spec/deep", "value": deep}]).to_string();
        let (code, st) = full(api.handle(&patch_req(&path, ct, &deep_patch)));
        assert_eq!(code, 422, "{st}");
    }
}
