//! Secrets (core/v1 `Secret`): what kube-apiserver does to one on every write, and which
//! secrets a pod refers to.
//!
//! - `data` values are Go `[]byte`s, so they travel as standard base64 with padding, where Go
//!   skips `\r` and `\n` ([`decode_base64`]; its error is the offset Go names in
//!   `illegal base64 data at input byte N`);
//! - `stringData` is merged into `data` (its keys win) and never stored, and an empty `type` is
//!   `Opaque` ([`apply_defaults`]), as the v1 conversion and defaulting do before validation;
//! - [`validate`] and [`validate_update`] are `ValidateSecret` and `ValidateSecretUpdate`: data keys
//!   are config keys, at most [`MAX_SECRET_BYTES`] of data, the keys each well-known type needs
//!   (`.dockerconfigjson` holding a JSON object for `kubernetes.io/dockerconfigjson`, ...), the
//!   type fixed once set, nothing changed in an `immutable` secret;
//! - [`referenced_names`] lists the secrets a pod uses, the edges the Node authorizer's graph
//!   draws from a secret to a pod.
//!
//! Objects are client JSON: nothing here panics on them.

use crate::validate::FieldError;
use serde_json::{json, Map, Value};

/// The most bytes a secret's `data` may hold, decoded (`core.MaxSecretSize`).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// The type of a secret that names none.
pub const TYPE_OPAQUE: &str = "Opaque";
/// A `~/.docker/config.json` in `data[.dockerconfigjson]`.
pub const TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// A legacy `~/.dockercfg` in `data[.dockercfg]`.
pub const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
/// The key of a `kubernetes.io/dockerconfigjson` secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The key of a `kubernetes.io/dockercfg` secret.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const REDACTED: &str = "<secret contents redacted>";
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn is_newline(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

/// Decodes standard base64 as Go's `base64.StdEncoding` does for a JSON `[]byte`: padding is
/// required, `\r` and `\n` anywhere are skipped, bits left over in the last symbol are ignored.
/// `Err` is the input offset Go reports as corrupt.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, usize> {
    let s = text.as_bytes();
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut si = 0;
    loop {
        let mut quantum = [0u8; 4];
        let mut j = 0;
        let mut ended = false;
        while j < 4 {
            let Some(&c) = s.get(si) else {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            };
            si += 1;
            if let Some(v) = base64_value(c) {
                quantum[j] = v;
                j += 1;
                continue;
            }
            if is_newline(c) {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(si - 1);
            }
            if j == 2 {
                // "==" is expected; newlines may sit between the two.
                while s.get(si).copied().is_some_and(is_newline) {
                    si += 1;
                }
                match s.get(si) {
                    None => return Err(s.len()),
                    Some(b'=') => si += 1,
                    Some(_) => return Err(si - 1),
                }
            }
            while s.get(si).copied().is_some_and(is_newline) {
                si += 1;
            }
            if si < s.len() {
                return Err(si);
            }
            ended = true;
            break;
        }
        let bits = quantum.iter().fold(0u32, |acc, v| acc << 6 | u32::from(*v));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..j]);
        if ended {
            return Ok(out);
        }
    }
}

/// Standard base64 with padding (what Go writes for a `[]byte`).
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Merges `stringData` into `data` (base64-encoded, replacing keys it shares) and removes it,
/// and sets `type` to `Opaque` when it is absent or empty.
pub fn apply_defaults(secret: &mut Value) {
    let Some(m) = secret.as_object_mut() else { return };
    if let Some(Value::Object(plain)) = m.remove("stringData") {
        if !plain.is_empty() && !m.get("data").is_some_and(Value::is_object) {
            m.insert("data".into(), Value::Object(Map::new()));
        }
        if let Some(Value::Object(data)) = m.get_mut("data") {
            for (k, v) in plain {
                if let Value::String(text) = v {
                    data.insert(k, json!(encode_base64(text.as_bytes())));
                }
            }
        }
    }
    if m.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        m.insert("type".into(), json!(TYPE_OPAQUE));
    }
}

/// The problems of a config key (`IsConfigMapKey`): at most 253 characters of `[-._a-zA-Z0-9]`,
/// and not `.`, `..` or starting with `..`.
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    if key.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    if key == "." {
        out.push("must not be '.'".into());
    } else if key == ".." {
        out.push("must not be '..'".into());
    } else if key.starts_with("..") {
        out.push("must not start with '..'".into());
    }
    out
}

/// What Go's `json.Unmarshal` into a `map[string]interface{}` says about `bytes`, when it
/// fails.
fn json_object_error(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_) | Value::Null) => None,
        Ok(other) => {
            let what = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Some(format!("json: cannot unmarshal {what} into Go value of type map[string]interface {{}}"))
        }
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".into()),
        Err(e) => Some(format!("invalid JSON: {e}")),
    }
}

fn data_of(secret: &Value) -> Option<&Map<String, Value>> {
    secret.get("data").and_then(Value::as_object)
}

fn type_of(secret: &Value) -> &str {
    secret.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The decoded value of `data[key]`, if present and base64.
fn decoded(secret: &Value, key: &str) -> Option<Vec<u8>> {
    data_of(secret)?.get(key)?.as_str().and_then(|s| decode_base64(s).ok())
}

/// The field errors of a secret, as `ValidateSecret` finds them (after [`apply_defaults`]).
pub fn validate(secret: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut total = 0usize;
    let empty = Map::new();
    let data = data_of(secret).unwrap_or(&empty);
    for (key, value) in data {
        for why in config_key_errors(key) {
            errors.push(FieldError::invalid(format!("data[{key}]"), &json!(key), &why));
        }
        let text = value.as_str().unwrap_or("");
        total = total.saturating_add(decode_base64(text).map_or(text.len(), |b| b.len()));
    }
    if total > MAX_SECRET_BYTES {
        errors.push(FieldError::too_long("data", MAX_SECRET_BYTES));
    }
    let has = |k: &str| data.contains_key(k);
    match type_of(secret) {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                errors.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        t @ (TYPE_DOCKER_CONFIG_JSON | TYPE_DOCKERCFG) => {
            let key = if t == TYPE_DOCKERCFG { DOCKERCFG_KEY } else { DOCKER_CONFIG_JSON_KEY };
            let field = format!("data[{key}]");
            if !has(key) {
                errors.push(FieldError::required(field, ""));
            } else if let Some(why) = json_object_error(&decoded(secret, key).unwrap_or_default()) {
                errors.push(FieldError::invalid(field, &json!(REDACTED), &why));
            }
        }
        // Either may be empty, but one must be there.
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errors.push(FieldError::required("data[username]", ""));
            errors.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if decoded(secret, "ssh-privatekey").is_none_or(|b| b.is_empty()) => {
            errors.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errors.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
    errors
}

/// The field errors of `new` replacing `old` beyond [`validate`]'s (`ValidateSecretUpdate`):
/// the type may not change, nor may an immutable secret.
pub fn validate_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if type_of(old) != type_of(new) {
        errors.push(FieldError::invalid("type", &json!(type_of(new)), "field is immutable"));
    }
    let immutable = |s: &Value| s.get("immutable").and_then(Value::as_bool) == Some(true);
    if immutable(old) {
        if !immutable(new) {
            errors.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
        }
        if old.get("data").filter(|d| !d.is_null()) != new.get("data").filter(|d| !d.is_null()) {
            errors.push(FieldError::forbidden("data", IMMUTABLE_SET));
        }
    }
    errors
}

/// Where a volume source names a secret: the source's field and the pointer to the name in it.
const VOLUME_SECRET_NAMES: &[(&str, &str)] = &[
    ("secret", "/secretName"),
    ("azureFile", "/secretName"),
    ("cephfs", "/secretRef/name"),
    ("cinder", "/secretRef/name"),
    ("flexVolume", "/secretRef/name"),
    ("iscsi", "/secretRef/name"),
    ("rbd", "/secretRef/name"),
    ("scaleIO", "/secretRef/name"),
    ("storageos", "/secretRef/name"),
    ("csi", "/nodePublishSecretRef/name"),
];

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The names of the secrets a pod uses, each once, in the order the spec gives them: its
/// `imagePullSecrets`, secret volumes (also inside projected volumes and the volume plugins that
/// take a secret reference), and every container's `env[].valueFrom.secretKeyRef` and
/// `envFrom[].secretRef` (as `podutil.VisitPodSecretNames`).
pub fn referenced_names(pod: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: Option<&Value>| {
        if let Some(n) = name.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    };
    for r in items(pod, "/spec/imagePullSecrets") {
        add(r.get("name"));
    }
    for v in items(pod, "/spec/volumes") {
        for (source, pointer) in VOLUME_SECRET_NAMES {
            add(v.get(*source).and_then(|s| s.pointer(pointer)));
        }
        for p in items(v, "/projected/sources") {
            add(p.pointer("/secret/name"));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(pod, &format!("/spec/{list}")) {
            for e in items(c, "/env") {
                add(e.pointer("/valueFrom/secretKeyRef/name"));
            }
            for e in items(c, "/envFrom") {
                add(e.pointer("/secretRef/name"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_reads_like_go() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("dTpw").unwrap(), b"u:p");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YWI=").unwrap(), b"ab");
        assert_eq!(decode_base64("YW\r\nJj\n").unwrap(), b"abc");
        assert_eq!(decode_base64("YR==").unwrap(), b"a", "left-over bits are ignored");
        // Offsets as Go reports them.
        assert_eq!(decode_base64("not base64!"), Err(3));
        assert_eq!(decode_base64("YQ"), Err(0), "padding is required");
        assert_eq!(decode_base64("YWJ"), Err(0));
        assert_eq!(decode_base64("Y==="), Err(1));
        assert_eq!(decode_base64("YQ=a"), Err(2));
        assert_eq!(decode_base64("YQ="), Err(3));
        assert_eq!(decode_base64("YQ==YQ=="), Err(4), "nothing after the padding");
        assert_eq!(decode_base64("=abc"), Err(0));
        for s in ["YWJj", "", "+/+/", "AAAA\n"] {
            assert_eq!(encode_base64(&decode_base64(s).unwrap()), s.trim_end());
        }
    }

    #[test]
    fn string_data_is_merged_and_the_type_defaulted() {
        let mut s = json!({"data": {"a": "YQ==", "b": "Yg=="}, "stringData": {"b": "B", "c": "see"}});
        apply_defaults(&mut s);
        assert_eq!(s, json!({"data": {"a": "YQ==", "b": "Qg==", "c": "c2Vl"}, "type": "Opaque"}));
        let mut s = json!({"stringData": {"k": "v"}, "type": ""});
        apply_defaults(&mut s);
        assert_eq!(s, json!({"data": {"k": "dg=="}, "type": "Opaque"}));
        let mut s = json!({"type": TYPE_DOCKER_CONFIG_JSON, "stringData": {}});
        apply_defaults(&mut s);
        assert_eq!(s, json!({"type": TYPE_DOCKER_CONFIG_JSON}));
        let mut odd = json!("not an object");
        apply_defaults(&mut odd);
        assert_eq!(odd, json!("not an object"));
    }

    fn messages(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
    }

    #[test]
    fn keys_sizes_and_types_are_checked() {
        let ok = json!({"type": "Opaque", "data": {"a.b-c_D9": "YQ=="}});
        assert!(validate(&ok).is_empty());
        let bad = json!({"type": "Opaque", "data": {"bad key": "", "..x": "", "k/": ""}});
        let got = messages(&validate(&bad));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("data[..x]: Invalid value: \"..x\": must not start with '..'"), "{got:?}");
        assert_eq!(got[1], format!("data[bad key]: Invalid value: \"bad key\": {CONFIG_KEY_MSG}"));
        assert!(got[2].starts_with("data[k/]: Invalid value: \"k/\": a valid config key"), "{got:?}");
        let long = "k".repeat(254);
        let got = messages(&validate(&json!({"data": {long.clone(): ""}})));
        assert_eq!(
            got,
            [format!("data[{long}]: Invalid value: \"{long}\": must be no more than 253 characters")]
        );

        // 1 MiB in all, decoded.
        let half = encode_base64(&vec![0u8; MAX_SECRET_BYTES / 2]);
        assert!(validate(&json!({"data": {"a": half, "b": half}})).is_empty());
        let errors = validate(&json!({"data": {"a": half, "b": half, "c": "AA=="}}));
        assert_eq!(messages(&errors), ["data: Too long: must have at most 1048576 bytes"]);
        assert_eq!(errors[0].reason, "FieldValueTooLong");

        let docker = |data: Value| json!({"type": TYPE_DOCKER_CONFIG_JSON, "data": data});
        let config = encode_base64(br#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}"#);
        assert!(validate(&docker(json!({".dockerconfigjson": config}))).is_empty());
        assert_eq!(
            messages(&validate(&docker(json!({"other": "YQ=="})))),
            ["data[.dockerconfigjson]: Required value"]
        );
        for (bytes, why) in [
            (&b"{\"auths\":"[..], "unexpected end of JSON input"),
            (b"[1]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
            (b"\"s\"", "json: cannot unmarshal string into Go value of type map[string]interface {}"),
        ] {
            let got = messages(&validate(&docker(json!({".dockerconfigjson": encode_base64(bytes)}))));
            assert_eq!(got, [format!("data[.dockerconfigjson]: Invalid value: \"{REDACTED}\": {why}")]);
        }
        let got = messages(&validate(&docker(json!({".dockerconfigjson": encode_base64(b"{nope")}))));
        assert!(
            got[0].starts_with(
                "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid JSON"
            ),
            "{got:?}"
        );
        let legacy = json!({"type": TYPE_DOCKERCFG, "data": {".dockercfg": encode_base64(b"{}")}});
        assert!(validate(&legacy).is_empty());
        assert_eq!(
            messages(&validate(&json!({"type": TYPE_DOCKERCFG, "data": {}}))),
            ["data[.dockercfg]: Required value"]
        );
        assert_eq!(
            messages(&validate(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}))),
            ["data[tls.key]: Required value"]
        );
        assert_eq!(validate(&json!({"type": "kubernetes.io/basic-auth"})).len(), 2);
        assert!(validate(&json!({"type": "kubernetes.io/basic-auth", "data": {"password": ""}})).is_empty());
        assert_eq!(
            validate(&json!({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}})).len(),
            1
        );
        assert_eq!(
            messages(&validate(&json!({"type": "kubernetes.io/service-account-token"}))),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert!(validate(&json!({"type": "example.com/anything", "data": {"x": 5}})).is_empty());
    }

    #[test]
    fn the_type_and_immutable_secrets_stay() {
        let old = json!({"type": "Opaque", "data": {"a": "YQ=="}});
        assert!(validate_update(&old, &json!({"type": "Opaque", "data": {"a": "Yg=="}})).is_empty());
        assert_eq!(
            messages(&validate_update(&old, &json!({"type": TYPE_DOCKER_CONFIG_JSON}))),
            ["type: Invalid value: \"kubernetes.io/dockerconfigjson\": field is immutable"]
        );
        let frozen = json!({"type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
        let mut same = frozen.clone();
        same["metadata"] = json!({"labels": {"x": "y"}});
        assert!(validate_update(&frozen, &same).is_empty());
        assert_eq!(
            messages(&validate_update(&frozen, &json!({"type": "Opaque", "data": {"a": "Yg=="}}))),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set"
            ]
        );
    }

    #[test]
    fn pods_name_secrets_in_many_places() {
        let pod = json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}, {"name": ""}, {}, {"name": "pull"}],
            "volumes": [{"name": "v", "secret": {"secretName": "vol"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "cm"}}]}},
                        {"name": "c", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}}],
            "containers": [{"name": "a", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                            "envFrom": [{"secretRef": {"name": "from"}}, {"configMapRef": {"name": "cm2"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init"}}]}]
        }});
        assert_eq!(referenced_names(&pod), ["pull", "vol", "proj", "csi", "env", "from", "init"]);
        assert!(referenced_names(&json!({"spec": {"imagePullSecrets": "oops", "volumes": [5]}})).is_empty());
        assert!(referenced_names(&json!(null)).is_empty());
    }
}
