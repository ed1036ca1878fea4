//! Decoding checks, validation and defaulting of objects on create and update, with the `Status`
//! bodies a kube-apiserver gives:
//!
//! - decoding ([`check_fields`]): a value of the wrong JSON type is `400 BadRequest`
//!   (`Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal ...`); fields the type
//!   does not declare are, per `?fieldValidation=`, dropped silently (`Ignore`), reported as warnings
//!   (`Warn`, the default) or rejected with `400 BadRequest` (`Strict`, what kubectl sends):
//!   `... strict decoding error: unknown field "spec.containers[0].imagee"`;
//! - validation ([`validate_create`], [`validate_update`]): `422 Invalid` with one cause per field error
//!   (`Pod "p" is invalid: spec.containers[0].image: Required value`);
//! - defaulting ([`apply_defaults`], [`prepare_for_create`]): the defaults the apiserver's registry and
//!   admission give a Pod, Node, Namespace or Secret, the pod's `status` (phase `Pending`, QoS class),
//!   `uid`, `creationTimestamp` and a name from `generateName`.
//!
//! Secrets have their own rules in [`crate::secret`].
//!
//! The field types come from the type table in [`crate::openapi`]. Input is client JSON: nothing here
//! panics on it.

use crate::openapi::{parse_spec, type_def, Spec};
use crate::rfc3339;
use serde_json::{json, Map, Value};
use std::time::SystemTime;

/// How unknown fields are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (the apiserver default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parses the query value; absent means `Warn`. An unknown value is a `400 BadRequest` Status.
    pub fn from_query(value: Option<&str>) -> Result<FieldValidation, Value> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(bad_request(&format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// A `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = Map::new();
    s.insert("kind".into(), json!("Status"));
    s.insert("apiVersion".into(), json!("v1"));
    s.insert("metadata".into(), json!({}));
    s.insert("status".into(), json!("Failure"));
    s.insert("message".into(), json!(message));
    s.insert("reason".into(), json!(reason));
    s.insert("code".into(), json!(code));
    if let Some(d) = details {
        s.insert("details".into(), d);
    }
    Value::Object(s)
}

/// A `400 BadRequest` Status.
pub fn bad_request(message: &str) -> Value {
    status(400, "BadRequest", message, None)
}

/// The API group of a kind, for `Kind.group` in messages (empty for core).
fn group_of(kind: &str) -> &'static str {
    match kind {
        "Lease" => "coordination.k8s.io",
        _ => "",
    }
}

fn version_of(kind: &str) -> String {
    match group_of(kind) {
        "" => "v1".into(),
        g => format!("{g}/v1"),
    }
}

fn qualified_kind(kind: &str) -> String {
    match group_of(kind) {
        "" => kind.to_string(),
        g => format!("{kind}.{g}"),
    }
}

fn go_type(spec: &Spec<'_>) -> String {
    match spec {
        Spec::Scalar("string") => "string".into(),
        Spec::Scalar("int32") => "int32".into(),
        Spec::Scalar("int64") => "int64".into(),
        Spec::Scalar("bool") => "bool".into(),
        Spec::Scalar("number") => "float64".into(),
        Spec::Scalar("time") => "v1.Time".into(),
        Spec::Scalar("microtime") => "v1.MicroTime".into(),
        Spec::Scalar("quantity") => "resource.Quantity".into(),
        Spec::Scalar("bytes") => "[]uint8".into(),
        Spec::Scalar(_) => "intstr.IntOrString".into(),
        Spec::Map(inner) => format!("map[string]{}", go_type(inner)),
        Spec::List(inner, _) => format!("[]{}", go_type(inner)),
        Spec::Open => "map[string]interface {}".into(),
        Spec::Ref(name) => format!("v1.{name}"),
    }
}

fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// The strict-decoding outcome of [`check_fields`].
#[derive(Debug, Default)]
struct Decode {
    /// Paths of undeclared fields (`spec.containers[0].foo`).
    unknown: Vec<String>,
    /// The first type mismatch, as Go's JSON decoder words it.
    type_error: Option<String>,
}

fn integer_fits(v: &Value, bits32: bool) -> bool {
    match v.as_i64() {
        Some(i) => !bits32 || i32::try_from(i).is_ok(),
        None => false,
    }
}

fn check_value(v: &Value, spec: &Spec<'_>, owner: &str, path: &str, dotted: &str, out: &mut Decode) {
    if v.is_null() {
        return;
    }
    let ok = match spec {
        Spec::Scalar("string") => v.is_string(),
        Spec::Scalar(t @ ("int32" | "int64")) => integer_fits(v, *t == "int32"),
        Spec::Scalar("bool") => v.is_boolean(),
        Spec::Scalar("number") => v.is_number(),
        Spec::Scalar("time" | "microtime") => v.as_str().is_some_and(|s| rfc3339::parse(s).is_some()),
        Spec::Scalar("quantity") => v.is_string() || v.is_number(),
        Spec::Scalar("bytes") => v.is_string(),
        Spec::Scalar(_) => v.is_string() || integer_fits(v, true),
        Spec::Map(_) | Spec::Open | Spec::Ref(_) => v.is_object(),
        Spec::List(..) => v.is_array(),
    };
    if !ok {
        if out.type_error.is_none() {
            out.type_error = Some(format!(
                "json: cannot unmarshal {} into Go struct field {owner}.{dotted} of type {}",
                json_kind(v),
                go_type(spec)
            ));
        }
        return;
    }
    match (spec, v) {
        (Spec::Map(inner), Value::Object(m)) => {
            for (k, e) in m {
                check_value(e, inner, owner, &format!("{path}[{k}]"), dotted, out);
            }
        }
        (Spec::List(inner, _), Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                check_value(e, inner, owner, &format!("{path}[{i}]"), dotted, out);
            }
        }
        (Spec::Ref(name), Value::Object(m)) => check_object(m, name, path, dotted, out),
        // Go decodes a []byte from base64 and reports the first bad byte.
        (Spec::Scalar("bytes"), Value::String(text)) => {
            if let Err(at) = crate::secret::decode_base64(text) {
                if out.type_error.is_none() {
                    out.type_error = Some(format!("illegal base64 data at input byte {at}"));
                }
            }
        }
        _ => {}
    }
}

fn check_object(obj: &Map<String, Value>, type_name: &str, path: &str, dotted: &str, out: &mut Decode) {
    let Some(t) = type_def(type_name) else { return };
    for (k, v) in obj {
        let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        let child_dotted = if dotted.is_empty() { k.clone() } else { format!("{dotted}.{k}") };
        match t.field(k) {
            Some(spec) => check_value(v, &parse_spec(spec), t.name, &child, &child_dotted, out),
            None => out.unknown.push(child),
        }
    }
}

fn remove_path(v: &mut Value, path: &[PathPart]) {
    match path {
        [] => {}
        [PathPart::Key(k)] => {
            if let Value::Object(m) = v {
                m.remove(k);
            }
        }
        [first, rest @ ..] => {
            let next = match (first, v) {
                (PathPart::Key(k), Value::Object(m)) => m.get_mut(k),
                (PathPart::Index(i), Value::Array(a)) => a.get_mut(*i),
                _ => None,
            };
            if let Some(n) = next {
                remove_path(n, rest);
            }
        }
    }
}

enum PathPart {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` (as [`check_fields`] writes paths) into parts.
fn path_parts(path: &str) -> Vec<PathPart> {
    let mut out = Vec::new();
    for seg in path.split('.') {
        let (name, mut rest) = match seg.find('[') {
            Some(i) => (seg.get(..i).unwrap_or(""), seg.get(i..).unwrap_or("")),
            None => (seg, ""),
        };
        if !name.is_empty() {
            out.push(PathPart::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = r.get(..end).unwrap_or("");
            out.push(match inner.parse() {
                Ok(i) => PathPart::Index(i),
                Err(_) => PathPart::Key(inner.to_string()),
            });
            rest = r.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// The root type of a kind, when the table describes it.
fn root_type(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" | "Node" | "Namespace" | "Event" | "Lease" | "Secret" => Some(kind_static(kind)),
        _ => None,
    }
}

fn kind_static(kind: &str) -> &'static str {
    ["Pod", "Node", "Namespace", "Event", "Lease", "Secret"].into_iter().find(|k| *k == kind).unwrap_or("")
}

/// Checks a request body of `kind` against the type table: a type mismatch is an error whatever
/// `mode` says; unknown fields are an error under `Strict`, removed from `obj` otherwise and returned
/// as warnings (`unknown field "spec.foo"`) under `Warn`. `Err` is the `400 BadRequest` Status.
pub fn check_fields(kind: &str, obj: &mut Value, mode: FieldValidation) -> Result<Vec<String>, Value> {
    let Some(root) = root_type(kind) else { return Ok(Vec::new()) };
    let prefix = format!("{kind} in version \"{}\" cannot be handled as a {kind}", version_of(kind));
    let Value::Object(m) = &*obj else {
        return Err(bad_request(&format!(
            "{prefix}: json: cannot unmarshal {} into Go value of type v1.{kind}",
            json_kind(obj)
        )));
    };
    let mut d = Decode::default();
    check_object(m, root, "", "", &mut d);
    if let Some(e) = d.type_error {
        return Err(bad_request(&format!("{prefix}: {e}")));
    }
    let quoted: Vec<String> = d.unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
    match mode {
        FieldValidation::Strict if !quoted.is_empty() => {
            Err(bad_request(&format!("{prefix}: strict decoding error: {}", quoted.join(", "))))
        }
        _ => {
            for p in &d.unknown {
                remove_path(obj, &path_parts(p));
            }
            Ok(if mode == FieldValidation::Warn { quoted } else { Vec::new() })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field errors and 422 Invalid
// ---------------------------------------------------------------------------------------------

/// One field error of a `422 Invalid` (apimachinery `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueNotSupported`,
    /// `FieldValueForbidden`.
    pub reason: &'static str,
    /// The field path (`spec.containers[0].image`).
    pub field: String,
    /// The message after the field (`Required value`, `Invalid value: "A": ...`).
    pub message: String,
}

impl FieldError {
    /// `Required value` (with `detail` after a colon when given).
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        let message =
            if detail.is_empty() { "Required value".into() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired", field: field.into(), message }
    }
    /// `Invalid value: VALUE: detail`.
    pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }
    fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }
    fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        }
    }
    /// `Forbidden: detail`.
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
}

impl FieldError {
    /// `Too long: must have at most MAX bytes` (the value is not shown).
    pub(crate) fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: must have at most {max} bytes"),
        }
    }
}

/// The `422 Invalid` Status for `errors` on the object `kind`/`name`.
pub fn invalid_status(kind: &str, name: &str, errors: &[FieldError]) -> Value {
    let texts: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    let joined = match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let causes: Vec<Value> =
        errors.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect();
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    details.insert("kind".into(), json!(kind));
    details.insert("causes".into(), json!(causes));
    if !group_of(kind).is_empty() {
        details.insert("group".into(), json!(group_of(kind)));
    }
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {joined}", qualified_kind(kind)),
        Some(Value::Object(details)),
    )
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn label_chars_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty() && s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || c == '-')
}

/// DNS-1123 label errors (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !label_chars_ok(s) {
        out.push(LABEL_MSG.to_string());
    }
    out
}

/// DNS-1123 subdomain errors (empty when valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(label_chars_ok) {
        out.push(SUBDOMAIN_MSG.to_string());
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |cur, k| cur.get(k)).and_then(Value::as_str)
}

const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const QUALIFIED_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn qualified_chars_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// apimachinery `IsQualifiedName`: an optional DNS-1123 subdomain prefix and `/`, then a name
/// of at most 63 characters (label keys, annotation keys, finalizers). Empty when valid.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                out.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!("a qualified name {QUALIFIED_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")];
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        out.push(format!("name part must be no more than {QUALIFIED_NAME_MAX} characters"));
    }
    if !qualified_chars_ok(name) {
        out.push(format!("name part {QUALIFIED_MSG}"));
    }
    out
}

/// apimachinery `IsValidLabelValue`: empty, or at most 63 characters of the qualified-name
/// alphabet. Empty when valid.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        out.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !value.is_empty() && !qualified_chars_ok(value) {
        out.push(LABEL_VALUE_MSG.to_string());
    }
    out
}

/// The object metadata every kind shares (apimachinery `ValidateObjectMeta`): label keys and
/// values, annotation keys (case does not matter), finalizer names. The field is the map's
/// (`metadata.labels`), as kube reports it; the annotations' total size is checked elsewhere.
fn validate_meta(obj: &Value, errors: &mut Vec<FieldError>) {
    let map = |field: &str| obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_object);
    for (k, v) in map("labels").into_iter().flatten() {
        for m in qualified_name_errors(k) {
            errors.push(FieldError::invalid("metadata.labels", &json!(k), &m));
        }
        for m in label_value_errors(v.as_str().unwrap_or("")) {
            errors.push(FieldError::invalid("metadata.labels", v, &m));
        }
    }
    for k in map("annotations").into_iter().flatten().map(|(k, _)| k) {
        for m in qualified_name_errors(&k.to_lowercase()) {
            errors.push(FieldError::invalid("metadata.annotations", &json!(k), &m));
        }
    }
    let finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array);
    for f in finalizers.into_iter().flatten().filter_map(Value::as_str) {
        for m in qualified_name_errors(f) {
            errors.push(FieldError::invalid("metadata.finalizers", &json!(f), &m));
        }
    }
}

/// apimachinery `IsValidPathSegmentName`, and no control characters (which kube would let
/// through for core/v1 events; here they would reach logs and terminals).
fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    let mut out: Vec<String> =
        ["/", "%"].iter().filter(|c| name.contains(**c)).map(|c| format!("may not contain '{c}'")).collect();
    if name.chars().any(char::is_control) {
        out.push("may not contain control characters".to_string());
    }
    out
}

fn validate_name(kind: &str, obj: &Value, errors: &mut Vec<FieldError>) {
    let name = str_at(obj, &["metadata", "name"]).unwrap_or("");
    let generate = str_at(obj, &["metadata", "generateName"]).unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            errors.push(FieldError::required("metadata.name", "name or generateName is required"));
        }
        return;
    }
    let problems = match kind {
        "Namespace" => dns1123_label_errors(name),
        // events.k8s.io names are DNS subdomains; core/v1 event names are only path segments
        // (kube validates them no further, for old clients).
        "Event" if str_at(obj, &["apiVersion"]) == Some("events.k8s.io/v1") => dns1123_subdomain_errors(name),
        "Event" => path_segment_errors(name),
        _ => dns1123_subdomain_errors(name),
    };
    for p in problems {
        errors.push(FieldError::invalid("metadata.name", &json!(name), &p));
    }
}

fn validate_containers(list: Option<&Value>, field: &str, required: bool, errors: &mut Vec<FieldError>) {
    let items = list.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if items.is_empty() {
        if required {
            errors.push(FieldError::required(field, ""));
        }
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match c.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errors.push(FieldError::required(format!("{at}.name"), "")),
            name => {
                for p in dns1123_label_errors(name) {
                    errors.push(FieldError::invalid(format!("{at}.name"), &json!(name), &p));
                }
                if seen.contains(&name) {
                    errors.push(FieldError::duplicate(format!("{at}.name"), &json!(name)));
                }
                seen.push(name);
            }
        }
        if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
            errors.push(FieldError::required(format!("{at}.image"), ""));
        }
        if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
            const OK: [&str; 3] = ["Always", "IfNotPresent", "Never"];
            if !OK.contains(&p) {
                errors.push(FieldError::not_supported(format!("{at}.imagePullPolicy"), &json!(p), &OK));
            }
        }
        for (j, port) in
            c.get("ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate()
        {
            let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&n) {
                errors.push(FieldError::invalid(
                    format!("{at}.ports[{j}].containerPort"),
                    &json!(n),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

fn validate_pod(pod: &Value, errors: &mut Vec<FieldError>) {
    let spec = pod.get("spec");
    if spec.is_none_or(Value::is_null) {
        errors.push(FieldError::required("spec.containers", ""));
        return;
    }
    validate_containers(spec.and_then(|s| s.get("containers")), "spec.containers", true, errors);
    validate_containers(spec.and_then(|s| s.get("initContainers")), "spec.initContainers", false, errors);
    if let Some(p) = spec.and_then(|s| s.get("restartPolicy")).and_then(Value::as_str) {
        const OK: [&str; 3] = ["Always", "OnFailure", "Never"];
        if !OK.contains(&p) {
            errors.push(FieldError::not_supported("spec.restartPolicy", &json!(p), &OK));
        }
    }
    if let Some(p) = spec.and_then(|s| s.get("dnsPolicy")).and_then(Value::as_str) {
        const OK: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !OK.contains(&p) {
            errors.push(FieldError::not_supported("spec.dnsPolicy", &json!(p), &OK));
        }
    }
    if let Some(n) = spec.and_then(|s| s.get("activeDeadlineSeconds")).and_then(Value::as_i64) {
        if n <= 0 {
            errors.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                &json!(n),
                "must be greater than or equal to 1",
            ));
        }
    }
    let mut volumes: Vec<&str> = Vec::new();
    for (i, v) in spec
        .and_then(|s| s.get("volumes"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match v.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errors.push(FieldError::required(format!("spec.volumes[{i}].name"), "")),
            n if volumes.contains(&n) => {
                errors.push(FieldError::duplicate(format!("spec.volumes[{i}].name"), &json!(n)))
            }
            n => volumes.push(n),
        }
    }
}

fn validate_lease(lease: &Value, errors: &mut Vec<FieldError>) {
    if let Some(n) = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64) {
        if n <= 0 {
            errors.push(FieldError::invalid(
                "spec.leaseDurationSeconds",
                &json!(n),
                "must be greater than 0",
            ));
        }
    }
}

fn validate_event(event: &Value, errors: &mut Vec<FieldError>) {
    let ns = str_at(event, &["metadata", "namespace"]).unwrap_or("");
    let involved_ns = str_at(event, &["involvedObject", "namespace"]).unwrap_or("");
    if !involved_ns.is_empty() && !ns.is_empty() && involved_ns != ns {
        errors.push(FieldError::invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        ));
    }
}

fn object_errors(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_name(kind, obj, &mut errors);
    validate_meta(obj, &mut errors);
    match kind {
        "Pod" => validate_pod(obj, &mut errors),
        "Lease" => validate_lease(obj, &mut errors),
        "Event" => validate_event(obj, &mut errors),
        "Secret" => errors.extend(crate::secret::validate(obj)),
        _ => {}
    }
    errors
}

fn name_for_status(obj: &Value) -> String {
    str_at(obj, &["metadata", "name"])
        .filter(|n| !n.is_empty())
        .or_else(|| str_at(obj, &["metadata", "generateName"]))
        .unwrap_or("")
        .to_string()
}

/// Validates an object to be created (after [`prepare_for_create`]); `Err` is the `422 Invalid` Status.
pub fn validate_create(kind: &str, obj: &Value) -> Result<(), Value> {
    let errors = object_errors(kind, obj);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_status(kind, &name_for_status(obj), &errors))
    }
}

/// The pod spec fields an update may change (apiserver `ValidatePodUpdate`), besides container images.
const POD_MUTABLE_SPEC: [&str; 3] = ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"];

fn pod_spec_without_mutable(spec: Option<&Value>) -> Value {
    let mut s = spec.cloned().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut s {
        for f in POD_MUTABLE_SPEC {
            m.remove(f);
        }
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = m.get_mut(list) {
                for c in cs {
                    if let Value::Object(c) = c {
                        c.remove("image");
                    }
                }
            }
        }
    }
    s
}

/// Validates `new` replacing `old` (PUT or the result of a PATCH); `status_only` for the `/status`
/// subresource, where only status changes are kept by the caller. `Err` is the `422 Invalid` Status.
pub fn validate_update(kind: &str, old: &Value, new: &Value, status_only: bool) -> Result<(), Value> {
    let mut errors = object_errors(kind, new);
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let (o, n) = (old.pointer(&format!("/metadata/{field}")), new.pointer(&format!("/metadata/{field}")));
        if n.is_some_and(|n| !n.is_null()) && o != n {
            errors.push(FieldError::invalid(
                format!("metadata.{field}"),
                n.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if kind == "Secret" {
        // ValidateSecretUpdate names the unchangeable fields before the secret's own checks.
        errors.splice(0..0, crate::secret::validate_update(old, new));
    }
    if kind == "Pod" && !status_only {
        let (o, n) = (old.get("spec"), new.get("spec"));
        // nodeName is set once, by binding.
        let node_o = o.and_then(|s| s.get("nodeName")).and_then(Value::as_str).unwrap_or("");
        let mut n_cmp = pod_spec_without_mutable(n);
        let o_cmp = pod_spec_without_mutable(o);
        if node_o.is_empty() {
            if let (Value::Object(m), Some(Value::Object(om))) = (&mut n_cmp, Some(&o_cmp)) {
                if !om.contains_key("nodeName") {
                    m.remove("nodeName");
                }
            }
        }
        if n_cmp != o_cmp {
            errors.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_status(kind, &name_for_status(new), &errors))
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities and QoS
// ---------------------------------------------------------------------------------------------

/// A resource quantity (`100m`, `1.5Gi`, `2e3`, `128974848`) in nano-units; `None` when malformed.
pub fn parse_quantity(s: &str) -> Option<i128> {
    wire::quantity::nanos(s).ok()
}

fn quantity_of(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

/// The QoS class of a pod (`BestEffort`, `Burstable`, `Guaranteed`) from its containers' cpu and
/// memory requests and limits (apiserver `qos.GetPodQOS`); requests default to limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let mut requests: Vec<(&str, i128)> = Vec::new();
    let mut limits: Vec<(&str, i128)> = Vec::new();
    let mut guaranteed = true;
    let add = |acc: &mut Vec<(&str, i128)>, name: &'static str, q: i128| match acc
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some((_, t)) => *t += q,
        None => acc.push((name, q)),
    };
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| pod.pointer(&format!("/spec/{l}")).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let res = c.get("resources");
        let get = |which: &str, r: &str| {
            res.and_then(|x| x.get(which)).and_then(|m| m.get(r)).and_then(quantity_of).filter(|q| *q != 0)
        };
        let mut has_limit = [false, false];
        for (i, r) in ["cpu", "memory"].into_iter().enumerate() {
            let limit = get("limits", r);
            let request = get("requests", r).or(limit);
            if let Some(q) = request {
                add(&mut requests, r, q);
            }
            if let Some(q) = limit {
                add(&mut limits, r, q);
                has_limit[i] = true;
            }
        }
        if !has_limit.iter().all(|h| *h) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        let equal = requests.len() == limits.len()
            && requests.iter().all(|(n, q)| limits.iter().any(|(ln, lq)| ln == n && lq == q));
        if equal {
            return "Guaranteed";
        }
    }
    "Burstable"
}

// ---------------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------------

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// `Always` for an image without a tag or with `:latest` (digests count as tagged), else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, "latest")) => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

fn default_probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else { return };
    set_default(m, "timeoutSeconds", json!(1));
    set_default(m, "periodSeconds", json!(10));
    set_default(m, "successThreshold", json!(1));
    set_default(m, "failureThreshold", json!(3));
    if let Some(Value::Object(h)) = m.get_mut("httpGet") {
        set_default(h, "path", json!("/"));
        set_default(h, "scheme", json!("HTTP"));
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set_default(m, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(m, "resources", json!({}));
    if let Some(Value::Object(r)) = m.get_mut("resources") {
        // Limits without requests make the requests equal the limits.
        if let Some(Value::Object(limits)) = r.get("limits").cloned() {
            let req = r.entry("requests").or_insert_with(|| json!({}));
            if let Value::Object(req) = req {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
    if let Some(Value::Array(ports)) = m.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(Value::Array(env)) = m.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(Value::Object(f)) = e.pointer_mut("/valueFrom/fieldRef") {
                set_default(f, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe) {
            default_probe(p);
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

fn default_pod(pod: &mut Value) {
    let Some(spec) = obj_mut(pod, "spec") else { return };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission: tolerate a not-ready or unreachable node for 5 minutes.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Value::Array(t) = tolerations {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            let has = t.iter().any(|x| {
                x.get("key").and_then(Value::as_str) == Some(key)
                    || (x.get("key").is_none() && x.get("operator").and_then(Value::as_str) == Some("Exists"))
            });
            if !has {
                t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            if !VOLUME_SOURCES.iter().any(|s| v.contains_key(*s)) {
                v.insert("emptyDir".into(), json!({}));
            }
            for src in ["configMap", "secret"] {
                if let Some(Value::Object(s)) = v.get_mut(src) {
                    set_default(s, "defaultMode", json!(420));
                }
            }
            if let Some(Value::Object(h)) = v.get_mut("hostPath") {
                set_default(h, "type", json!(""));
            }
        }
    }
}

/// Applies the defaults of `kind` that hold on every write (create and update): pod spec and
/// container defaults, node allocatable, namespace finalizers and phase, a secret's type and its
/// `stringData` merged into `data`.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => default_pod(obj),
        "Node" => {
            if let Some(status) = obj_mut(obj, "status") {
                if let Some(cap) = status.get("capacity").cloned() {
                    set_default(status, "allocatable", cap);
                }
            }
            obj_mut(obj, "spec");
        }
        "Secret" => crate::secret::apply_defaults(obj),
        "Namespace" => {
            // The apiserver labels every namespace with its own name.
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).map(String::from);
            if let (Some(name), Some(meta)) = (name, obj.get_mut("metadata")) {
                if let Some(labels) = obj_mut(meta, "labels") {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        _ => {}
    }
}

/// Letters `generateName` suffixes use (apiserver `utilrand.String`: no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The 5-character suffix for `generateName`, derived from `seed` (e.g. the new object's uid).
pub fn generated_suffix(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..5)
        .map(|i| {
            let idx = (h >> (i * 12)) as usize % NAME_ALPHABET.len();
            char::from(NAME_ALPHABET.get(idx).copied().unwrap_or(b'x'))
        })
        .collect()
}

/// Prepares a new object as the apiserver does on create: `metadata.uid = uid`,
/// `metadata.creationTimestamp = now`, a name from `generateName` when none is given, system fields
/// cleared (deletion timestamps), [`apply_defaults`], and for pods `status` replaced by
/// `{phase: Pending, qosClass}` (client-sent status is ignored).
pub fn prepare_for_create(kind: &str, obj: &mut Value, uid: &str, now: SystemTime) {
    if let Some(meta) = obj_mut(obj, "metadata") {
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(rfc3339::format_time(rfc3339::unix_seconds(now))));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        let has_name = meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !has_name {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                let name = format!("{prefix}{}", generated_suffix(uid));
                meta.insert("name".into(), json!(name));
            }
        }
    }
    apply_defaults(kind, obj);
    if kind == "Pod" {
        let qos = qos_class(obj);
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"phase": "Pending", "qosClass": qos}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn strict_unknown_fields_are_bad_request_with_paths() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "busybox", "imagee": "x"}], "foo": 1}));
        let err = check_fields("Pod", &mut p, FieldValidation::Strict).unwrap_err();
        assert_eq!(err["code"], 400);
        assert_eq!(err["reason"], "BadRequest");
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.starts_with("Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: "),
            "{msg}"
        );
        assert!(msg.contains("unknown field \"spec.containers[0].imagee\""), "{msg}");
        assert!(msg.contains("unknown field \"spec.foo\""), "{msg}");
    }

    #[test]
    fn warn_and_ignore_drop_unknown_fields() {
        let mut p = pod(json!({"containers": [{"name": "a", "image": "busybox", "imagee": "x"}]}));
        p["status"] = json!({"bogus": true});
        let warnings = check_fields("Pod", &mut p, FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            vec!["unknown field \"spec.containers[0].imagee\"", "unknown field \"status.bogus\""]
        );
        assert!(p["spec"]["containers"][0].get("imagee").is_none());
        assert!(p["status"].get("bogus").is_none());
        let mut p = pod(json!({"containers": [], "zzz": 1}));
        assert_eq!(check_fields("Pod", &mut p, FieldValidation::Ignore).unwrap(), Vec::<String>::new());
        assert!(p["spec"].get("zzz").is_none());
        // Open objects and maps accept anything.
        let mut p = pod(json!({"affinity": {"anything": 1}, "nodeSelector": {"k": "v"}}));
        assert!(check_fields("Pod", &mut p, FieldValidation::Strict).unwrap().is_empty());
    }

    #[test]
    fn type_mismatch_is_bad_request_in_go_words() {
        let mut p = pod(json!({"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}));
        let err = check_fields("Pod", &mut p, FieldValidation::Ignore).unwrap_err();
        assert_eq!(
            err["message"],
            "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32"
        );
        let mut p = pod(json!("nope"));
        assert!(check_fields("Pod", &mut p, FieldValidation::Ignore).is_err());
        let mut p = json!([1]);
        assert_eq!(check_fields("Node", &mut p, FieldValidation::Ignore).unwrap_err()["code"], 400);
        let mut p = json!({"spec": {"leaseDurationSeconds": 1.5}});
        assert!(check_fields("Lease", &mut p, FieldValidation::Ignore).unwrap_err()["message"]
            .as_str()
            .unwrap()
            .contains("number 1.5"));
        let mut p = json!({"spec": {"renewTime": "yesterday"}});
        assert!(check_fields("Lease", &mut p, FieldValidation::Ignore).is_err());
        assert_eq!(FieldValidation::from_query(Some("Bogus")).unwrap_err()["code"], 400);
        assert_eq!(FieldValidation::from_query(None).unwrap(), FieldValidation::Warn);
        assert_eq!(FieldValidation::from_query(Some("Strict")).unwrap(), FieldValidation::Strict);
    }

    #[test]
    fn invalid_pods_are_422_with_causes() {
        let p = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [
            {"name": "a"}, {"name": "a", "image": "x"}, {"image": "y", "ports": [{"containerPort": 0}]}],
            "restartPolicy": "Sometimes"}});
        let err = validate_create("Pod", &p).unwrap_err();
        assert_eq!(err["code"], 422);
        assert_eq!(err["reason"], "Invalid");
        assert_eq!(err["details"]["kind"], "Pod");
        assert_eq!(err["details"]["name"], "Bad_Name");
        let fields: Vec<&str> = err["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            vec![
                "metadata.name",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[2].name",
                "spec.containers[2].ports[0].containerPort",
                "spec.restartPolicy"
            ]
        );
        let msg = err["message"].as_str().unwrap();
        assert!(msg.starts_with("Pod \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{msg}");
        assert!(msg.contains("spec.containers[1].name: Duplicate value: \"a\""));
        assert!(msg.contains("spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""));
    }

    /// Issue 13 finding 8: label keys and values, annotation keys and finalizers as
    /// apimachinery validates them, with kube's messages in 422 causes.
    #[test]
    fn labels_annotations_and_finalizers_are_validated() {
        let node = |meta: Value| {
            let mut m = meta;
            m["name"] = json!("n1");
            json!({"metadata": m})
        };
        let long = "x".repeat(300);
        for bad in ["bad key!", "", "a/b/c", "/x", "example.com/", "-a", long.as_str(), "Bad_Prefix/x"] {
            let err = validate_create("Node", &node(json!({"labels": {bad: "v"}}))).unwrap_err();
            assert_eq!(
                (err["code"].as_u64(), err["reason"].as_str()),
                (Some(422), Some("Invalid")),
                "{bad:?}"
            );
            let cause = &err["details"]["causes"][0];
            assert_eq!(
                (cause["field"].as_str(), cause["reason"].as_str()),
                (Some("metadata.labels"), Some("FieldValueInvalid")),
                "{bad:?}"
            );
        }
        let err = validate_create("Node", &node(json!({"labels": {"bad key!": "v"}}))).unwrap_err();
        assert_eq!(
            err["message"],
            "Node \"n1\" is invalid: metadata.labels: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let err = validate_create("Node", &node(json!({"labels": {"ok": long}}))).unwrap_err();
        assert_eq!(
            err["details"]["causes"][0]["message"],
            format!("Invalid value: \"{long}\": must be no more than 63 characters")
        );
        for bad in ["-x", "a b", "x\u{0}"] {
            assert!(validate_create("Node", &node(json!({"labels": {"k": bad}}))).is_err(), "{bad:?}");
        }
        for good in
            [json!({"k": ""}), json!({"example.com/MyName": "My_value.1", "kubernetes.io/hostname": "n1"})]
        {
            assert!(validate_create("Node", &node(json!({"labels": good}))).is_ok(), "{good}");
        }
        // Annotation keys follow the same rule, case aside; values are free.
        assert!(validate_create("Node", &node(json!({"annotations": {"Example.COM/Key": "any thing\n"}})))
            .is_ok());
        let err = validate_create("Node", &node(json!({"annotations": {"bad key": "v"}}))).unwrap_err();
        assert_eq!(err["details"]["causes"][0]["field"], "metadata.annotations");
        let err = validate_create("Node", &node(json!({"finalizers": ["ok/fin", "no way"]}))).unwrap_err();
        assert_eq!(err["details"]["causes"].as_array().map(Vec::len), Some(1));
        assert_eq!(err["details"]["causes"][0]["field"], "metadata.finalizers");
        // An update is validated as well.
        let old = node(json!({}));
        assert!(validate_update("Node", &old, &node(json!({"labels": {"a/b/c": ""}})), false).is_err());
    }

    #[test]
    fn control_characters_are_refused_in_every_name() {
        for bad in ["a\u{0}b", "e.1\r\nX-Injected: 1", "line\n", "tab\t"] {
            for kind in ["Event", "Pod", "Node", "Namespace", "Secret", "Lease"] {
                let err = validate_create(kind, &json!({"metadata": {"name": bad}})).unwrap_err();
                let causes = err["details"]["causes"].as_array().unwrap();
                assert!(causes.iter().any(|c| c["field"] == "metadata.name"), "{kind} {bad:?}: {err}");
            }
        }
        let err = validate_create("Event", &json!({"metadata": {"name": "a\u{0}"}})).unwrap_err();
        assert_eq!(
            err["details"]["causes"][0]["message"],
            "Invalid value: \"a\\u0000\": may not contain control characters"
        );
        let err = validate_create("Event", &json!({"metadata": {"name": "a/%b"}})).unwrap_err();
        assert_eq!(err["details"]["causes"].as_array().map(Vec::len), Some(2));
        // core/v1 event names need only be path segments; events.k8s.io names are subdomains.
        assert!(validate_create("Event", &json!({"metadata": {"name": "Pod_A.1"}})).is_ok());
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "Pod_A.1"}});
        assert!(validate_create("Event", &v1).is_err());
    }

    #[test]
    fn names_required_and_checked_per_kind() {
        let err = validate_create(
            "Pod",
            &json!({"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}}),
        )
        .unwrap_err();
        assert_eq!(
            err["message"],
            "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        let err = validate_create("Pod", &json!({"metadata": {"name": "p"}})).unwrap_err();
        assert_eq!(err["message"], "Pod \"p\" is invalid: spec.containers: Required value");
        assert!(validate_create("Pod", &json!({"metadata": {"generateName": "p-"}, "spec": {"containers": [{"name": "a", "image": "b"}]}})).is_ok());
        assert!(validate_create("Namespace", &json!({"metadata": {"name": "a.b"}})).is_err());
        assert!(validate_create("Node", &json!({"metadata": {"name": "a.b"}})).is_ok());
        assert!(validate_create("Node", &json!({"metadata": {"name": "x".repeat(254)}})).is_err());
        assert!(validate_create("Event", &json!({"metadata": {"name": "n1.17f0a"}})).is_ok());
        let err = validate_create(
            "Lease",
            &json!({"metadata": {"name": "n1"}, "spec": {"leaseDurationSeconds": 0}}),
        )
        .unwrap_err();
        assert!(err["message"]
            .as_str()
            .unwrap()
            .starts_with("Lease.coordination.k8s.io \"n1\" is invalid: spec.leaseDurationSeconds"));
        assert_eq!(err["details"]["group"], "coordination.k8s.io");
    }

    #[test]
    fn updates_keep_identity_and_pod_spec_mostly_immutable() {
        let old = json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {"containers": [{"name": "a", "image": "x:1"}], "terminationGracePeriodSeconds": 30}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        new["spec"]["activeDeadlineSeconds"] = json!(5);
        assert!(validate_update("Pod", &old, &new, false).is_ok());
        new["spec"]["containers"][0]["command"] = json!(["sh"]);
        let err = validate_update("Pod", &old, &new, false).unwrap_err();
        assert!(err["message"]
            .as_str()
            .unwrap()
            .contains("spec: Forbidden: pod updates may not change fields"));
        assert!(validate_update("Pod", &old, &new, true).is_ok());
        let mut new = old.clone();
        new["metadata"]["uid"] = json!("u2");
        let err = validate_update("Pod", &old, &new, true).unwrap_err();
        assert_eq!(err["details"]["causes"][0]["field"], "metadata.uid");
        // Binding: nodeName set on a pod that had none is allowed.
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!("n1");
        assert!(validate_update("Pod", &old, &new, false).is_ok());
        let mut moved = new.clone();
        moved["spec"]["nodeName"] = json!("n2");
        assert!(validate_update("Pod", &new, &moved, false).is_err());
    }

    #[test]
    fn qos_classes() {
        let with = |res: Value| json!({"spec": {"containers": [{"name": "a", "resources": res}]}});
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(qos_class(&with(json!({"requests": {"cpu": "0"}}))), "BestEffort");
        assert_eq!(qos_class(&with(json!({"requests": {"cpu": "100m"}}))), "Burstable");
        assert_eq!(qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(
            qos_class(&with(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1024Mi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}))),
            "Burstable"
        );
        assert_eq!(qos_class(&with(json!({"limits": {"cpu": "1"}}))), "Burstable");
        let two = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b"}]}});
        assert_eq!(qos_class(&two), "Burstable");
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox:latest@sha256:abc"), "Always");
    }

    #[test]
    fn prepare_pod_for_create() {
        let mut p = json!({"metadata": {"generateName": "web-", "deletionTimestamp": "x"},
            "spec": {"containers": [{"name": "a", "image": "busybox:1.36", "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}}, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
                "volumes": [{"name": "v"}]},
            "status": {"phase": "Running", "podIP": "1.2.3.4"}});
        prepare_for_create("Pod", &mut p, "0b7c-uid", crate::rfc3339::system_time(1_733_911_200));
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(p["metadata"]["uid"], "0b7c-uid");
        assert_eq!(p["metadata"]["creationTimestamp"], "2024-12-11T10:00:00Z");
        assert!(p["metadata"].get("deletionTimestamp").is_none());
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}));
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"], json!({"cpu": "1", "memory": "1Gi"}));
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
        assert!(validate_create("Pod", &p).is_ok());
        // Defaulting is idempotent.
        let before = p.clone();
        apply_defaults("Pod", &mut p);
        assert_eq!(p, before);
    }

    #[test]
    fn prepare_namespace_and_node() {
        let mut ns = json!({"metadata": {"name": "team"}});
        prepare_for_create("Namespace", &mut ns, "u", SystemTime::UNIX_EPOCH);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team");
        let mut node = json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2"}}});
        prepare_for_create("Node", &mut node, "u", SystemTime::UNIX_EPOCH);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));
        assert_eq!(node["metadata"]["creationTimestamp"], "1970-01-01T00:00:00Z");
        assert_ne!(generated_suffix("a"), generated_suffix("b"));
    }

    /// Walks the official Pod schema over a defaulted pod: every field the schema marks required is
    /// present in every object that is present, and every field we produced is one the schema knows.
    #[test]
    fn defaulted_pod_satisfies_official_schema() {
        let Some(doc) = crate::openapi::official("api__v1_openapi.json") else { return };
        let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "a", "image": "busybox", "ports": [{"containerPort": 80}],
                "env": [{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "readinessProbe": {"tcpSocket": {"port": 80}}}],
                "initContainers": [{"name": "i", "image": "busybox"}],
                "volumes": [{"name": "v"}, {"name": "c", "configMap": {"name": "cm"}}]}});
        let mut q = p.clone();
        assert!(check_fields("Pod", &mut q, FieldValidation::Strict).unwrap().is_empty());
        prepare_for_create("Pod", &mut p, "uid-1", SystemTime::UNIX_EPOCH);
        fn reference(v: &Value) -> Option<&str> {
            v.get("$ref")
                .and_then(Value::as_str)
                .or_else(|| v.pointer("/allOf/0/$ref").and_then(Value::as_str))
        }
        fn walk(schemas: &Map<String, Value>, schema: &str, v: &Value, path: &str, checked: &mut usize) {
            let name = schema.rsplit('/').next().unwrap_or(schema);
            let s = &schemas[name];
            let Some(obj) = v.as_object() else { return };
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                assert!(obj.contains_key(r), "{path}: required field {r} missing");
            }
            let Some(props) = s["properties"].as_object() else { return };
            for (k, val) in obj {
                let p = props.get(k).unwrap_or_else(|| panic!("{path}.{k}: not in the official schema"));
                *checked += 1;
                if let Some(r) = reference(p) {
                    walk(schemas, r, val, &format!("{path}.{k}"), checked);
                } else if let (Some(items), Some(list)) = (p.get("items"), val.as_array()) {
                    if let Some(r) = reference(items) {
                        for (i, e) in list.iter().enumerate() {
                            walk(schemas, r, e, &format!("{path}.{k}[{i}]"), checked);
                        }
                    }
                }
            }
        }
        let mut checked = 0;
        walk(&schemas, "io.k8s.api.core.v1.Pod", &p, "", &mut checked);
        assert!(checked > 40, "only {checked} fields checked");
    }

    /// Our Status bodies use only fields of the official Status, StatusDetails and StatusCause schemas.
    #[test]
    fn status_bodies_match_official_schema() {
        let Some(doc) = crate::openapi::official("api__v1_openapi.json") else { return };
        let schemas = &doc["components"]["schemas"];
        let err = validate_create("Pod", &json!({"metadata": {"name": "A"}})).unwrap_err();
        for (schema, value) in [
            ("io.k8s.apimachinery.pkg.apis.meta.v1.Status", &err),
            ("io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails", &err["details"]),
            ("io.k8s.apimachinery.pkg.apis.meta.v1.StatusCause", &err["details"]["causes"][0]),
        ] {
            let props = schemas[schema]["properties"].as_object().unwrap();
            for k in value.as_object().unwrap().keys() {
                assert!(props.contains_key(k), "{schema}: {k}");
            }
        }
    }
}
