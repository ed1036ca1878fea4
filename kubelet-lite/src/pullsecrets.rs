//! Image pull secrets: the registry credentials held by the Secrets a pod names in
//! `spec.imagePullSecrets`, read as the kubelet's credential provider reads them
//! (`pkg/credentialprovider`):
//!
//! - a `kubernetes.io/dockerconfigjson` Secret holds a `~/.docker/config.json` under
//!   `data[.dockerconfigjson]`: `{"auths": {SERVER: ENTRY, ...}}`;
//! - a `kubernetes.io/dockercfg` Secret holds the legacy `~/.dockercfg` under
//!   `data[.dockercfg]`: `{SERVER: ENTRY, ...}`;
//! - a Secret of any other type gives no credentials (and is no error).
//!
//! An ENTRY is `{"username": .., "password": .., "auth": base64("username:password")}`; `auth`,
//! when present, is what counts. SERVER names a registry as a person writes it
//! (`127.0.0.1:5000`, `https://127.0.0.1:5000`, `http://host/v2/`, `https://index.docker.io/v1/`)
//! and is normalised to the registry as image references name it ([`registry_of`]: the host and
//! port, Docker Hub's hosts as `docker.io`), which is what a runtime matches
//! [`RegistryAuth::registry`] against.
//!
//! The Secret comes from the API server and is taken as an allegation: parsing is total, every
//! malformation is a [`SecretError`] or (for one entry) that entry left out, never a panic, and
//! the work is bounded ([`MAX_SECRET_RESPONSE_BYTES`], [`MAX_ENTRIES_PER_SECRET`]).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use base64::Engine;
use serde_json::{Map, Value};

use crate::image::DEFAULT_REGISTRY;
use crate::runtime::RegistryAuth;

/// The most image pull secrets fetched for one pod; names past it are not looked at.
pub const MAX_PULL_SECRETS: usize = 16;
/// The largest reply to a Secret GET that is read.
pub const MAX_SECRET_RESPONSE_BYTES: usize = 1 << 20;
/// The most registries taken from one Secret.
pub const MAX_ENTRIES_PER_SECRET: usize = 64;
/// The longest registry name kept.
const MAX_REGISTRY_LEN: usize = 255;

/// The Secret type of a `~/.docker/config.json`.
pub const TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// Its key in `data`.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The Secret type of a legacy `~/.dockercfg`.
pub const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
/// Its key in `data`.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// Why a Secret gives no credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// The reply is larger than [`MAX_SECRET_RESPONSE_BYTES`] (its length).
    TooLarge(usize),
    /// The reply is not a JSON object (a Secret).
    NotASecret,
    /// The Secret's type needs this key in `data` and it is absent or not a string.
    MissingKey(&'static str),
    /// The value of this key is not base64.
    NotBase64(&'static str),
    /// The decoded configuration is not a JSON object.
    NotJson,
    /// A `.dockerconfigjson` without an `auths` object.
    NoAuths,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::TooLarge(n) => {
                write!(f, "the secret is {n} bytes, more than the {MAX_SECRET_RESPONSE_BYTES} read")
            }
            SecretError::NotASecret => write!(f, "the reply is not a Secret"),
            SecretError::MissingKey(k) => write!(f, "the secret has no data[{k}]"),
            SecretError::NotBase64(k) => write!(f, "data[{k}] is not base64"),
            SecretError::NotJson => write!(f, "the registry configuration is not a JSON object"),
            SecretError::NoAuths => write!(f, "the registry configuration has no \"auths\" object"),
        }
    }
}

/// The registry a configuration's SERVER names, as image references name it: the scheme
/// (`http://`, `https://`) and any path are dropped, Docker Hub's hosts (`index.docker.io`,
/// `registry-1.docker.io`) are `docker.io`. `None` for an empty or unusable name.
pub fn registry_of(server: &str) -> Option<String> {
    let s = server.trim();
    let lower = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let rest = if lower("https://") {
        s.get(8..)?
    } else if lower("http://") {
        s.get(7..)?
    } else {
        s
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || host.len() > MAX_REGISTRY_LEN
        || !host.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'@' | b'?' | b'#'))
    {
        return None;
    }
    if ["index.docker.io", "registry-1.docker.io", DEFAULT_REGISTRY]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
    {
        return Some(DEFAULT_REGISTRY.to_string());
    }
    Some(host.to_string())
}

/// `username:password` from an entry's `auth`.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// The credentials of one entry; `None` when it has none usable (not an object, an `auth` that
/// is not base64 of `user:password`, neither a username nor a password).
fn entry(server: &str, value: &Value) -> Option<RegistryAuth> {
    let registry = registry_of(server)?;
    let e = value.as_object()?;
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let (username, password) = match text("auth") {
        "" => (text("username").to_string(), text("password").to_string()),
        auth => decode_auth(auth)?,
    };
    if username.is_empty() && password.is_empty() {
        return None;
    }
    Some(RegistryAuth { registry, username, password })
}

fn entries(config: &Map<String, Value>) -> Vec<RegistryAuth> {
    config.iter().filter_map(|(server, v)| entry(server, v)).take(MAX_ENTRIES_PER_SECRET).collect()
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, SecretError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(SecretError::NotJson),
    }
}

/// The credentials in a `~/.docker/config.json` (`{"auths": {...}}`).
pub fn docker_config_json(bytes: &[u8]) -> Result<Vec<RegistryAuth>, SecretError> {
    match json_object(bytes)?.get("auths") {
        Some(Value::Object(auths)) => Ok(entries(auths)),
        _ => Err(SecretError::NoAuths),
    }
}

/// The credentials in a legacy `~/.dockercfg` (the map of servers itself).
pub fn dockercfg(bytes: &[u8]) -> Result<Vec<RegistryAuth>, SecretError> {
    Ok(entries(&json_object(bytes)?))
}

/// The credentials in a Secret, given as the API server's JSON reply to its GET.
pub fn registry_auths(secret: &[u8]) -> Result<Vec<RegistryAuth>, SecretError> {
    if secret.len() > MAX_SECRET_RESPONSE_BYTES {
        return Err(SecretError::TooLarge(secret.len()));
    }
    let Ok(Value::Object(s)) = serde_json::from_slice::<Value>(secret) else {
        return Err(SecretError::NotASecret);
    };
    let legacy = match s.get("type").and_then(Value::as_str) {
        Some(TYPE_DOCKER_CONFIG_JSON) => false,
        Some(TYPE_DOCKERCFG) => true,
        _ => return Ok(Vec::new()),
    };
    let key = if legacy { DOCKERCFG_KEY } else { DOCKER_CONFIG_JSON_KEY };
    let value =
        s.get("data").and_then(|d| d.get(key)).and_then(Value::as_str).ok_or(SecretError::MissingKey(key))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| SecretError::NotBase64(key))?;
    if legacy {
        dockercfg(&bytes)
    } else {
        docker_config_json(&bytes)
    }
}

/// Whether `name` can name a Secret (a DNS-1123 subdomain), so it is safe in a request path.
pub fn valid_secret_name(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || *c == b'-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use serde_json::json;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(type_: &str, key: &str, config: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"},
                                   "type": type_, "data": {key: b64(config)}}))
        .unwrap()
    }

    fn auth(registry: &str, username: &str, password: &str) -> RegistryAuth {
        RegistryAuth { registry: registry.into(), username: username.into(), password: password.into() }
    }

    #[test]
    fn servers_are_named_as_image_references_name_registries() {
        for (server, registry) in [
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("HTTPS://registry.example.com/team/app", "registry.example.com"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("  localhost:5000  ", "localhost:5000"),
        ] {
            assert_eq!(registry_of(server).as_deref(), Some(registry), "{server}");
        }
        for bad in ["", "https://", "/v2/", "a b", "user@host", "http:///x", &"h".repeat(256), "tab\there"] {
            assert_eq!(registry_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn docker_config_json_secrets_give_their_registries() {
        let config = br#"{"auths": {
            "https://127.0.0.1:5000": {"username": "ignored", "password": "ignored", "auth": "dTpw"},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw:with:colons"},
            "registry.example.com": {"auth": "bmFtZTpwYXNzOndvcmQ="},
            "anonymous.example.com": {},
            "bad-auth.example.com": {"auth": "not base64!"},
            "no-colon.example.com": {"auth": "bm9jb2xvbg=="},
            "odd.example.com": "not an object"
        }, "credsStore": "desktop"}"#;
        let got = registry_auths(&secret(TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY, config)).unwrap();
        assert_eq!(
            got,
            vec![
                auth("127.0.0.1:5000", "u", "p"),
                auth("docker.io", "hub", "pw:with:colons"),
                auth("registry.example.com", "name", "pass:word"),
            ]
        );
        // What `kubectl create secret docker-registry` writes.
        let kubectl = br#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p","auth":"dTpw"}}}"#;
        let got = registry_auths(&secret(TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY, kubectl)).unwrap();
        assert_eq!(got, vec![auth("127.0.0.1:5000", "u", "p")]);
        // The password never shows in a Debug print.
        assert!(!format!("{:?}", got[0]).contains("\"p\""));
    }

    #[test]
    fn legacy_dockercfg_secrets_are_the_map_itself() {
        let cfg = br#"{"http://127.0.0.1:5000": {"auth": "dTpw", "email": "x@example.com"}}"#;
        assert_eq!(
            registry_auths(&secret(TYPE_DOCKERCFG, DOCKERCFG_KEY, cfg)).unwrap(),
            vec![auth("127.0.0.1:5000", "u", "p")]
        );
        // The wrong key for the type is a missing key.
        assert_eq!(
            registry_auths(&secret(TYPE_DOCKERCFG, DOCKER_CONFIG_JSON_KEY, cfg)),
            Err(SecretError::MissingKey(DOCKERCFG_KEY))
        );
    }

    #[test]
    fn other_secret_types_give_nothing() {
        let s = serde_json::to_vec(&json!({"type": "Opaque", "data": {"a": "YQ=="}})).unwrap();
        assert_eq!(registry_auths(&s), Ok(vec![]));
        assert_eq!(registry_auths(br#"{"data": {}}"#), Ok(vec![]));
        assert_eq!(registry_auths(br#"{"type": 5}"#), Ok(vec![]));
    }

    #[test]
    fn malformed_secrets_are_errors_never_panics() {
        let t = TYPE_DOCKER_CONFIG_JSON;
        let k = DOCKER_CONFIG_JSON_KEY;
        assert_eq!(registry_auths(b""), Err(SecretError::NotASecret));
        assert_eq!(registry_auths(b"{not json"), Err(SecretError::NotASecret));
        assert_eq!(registry_auths(b"[1, 2]"), Err(SecretError::NotASecret));
        assert_eq!(
            registry_auths(br#"{"type": "kubernetes.io/dockerconfigjson"}"#),
            Err(SecretError::MissingKey(k))
        );
        let not_string = serde_json::to_vec(&json!({"type": t, "data": {k: 5}})).unwrap();
        assert_eq!(registry_auths(&not_string), Err(SecretError::MissingKey(k)));
        let data_list = serde_json::to_vec(&json!({"type": t, "data": [1]})).unwrap();
        assert_eq!(registry_auths(&data_list), Err(SecretError::MissingKey(k)));
        let not_b64 = serde_json::to_vec(&json!({"type": t, "data": {k: "%%%not base64"}})).unwrap();
        assert_eq!(registry_auths(&not_b64), Err(SecretError::NotBase64(k)));
        assert_eq!(registry_auths(&secret(t, k, b"{\"auths\":")), Err(SecretError::NotJson));
        assert_eq!(registry_auths(&secret(t, k, b"[]")), Err(SecretError::NotJson));
        assert_eq!(registry_auths(&secret(t, k, &[0xff, 0xfe])), Err(SecretError::NotJson));
        assert_eq!(registry_auths(&secret(t, k, b"{}")), Err(SecretError::NoAuths));
        assert_eq!(registry_auths(&secret(t, k, br#"{"auths": []}"#)), Err(SecretError::NoAuths));
        assert_eq!(registry_auths(&secret(t, k, br#"{"auths": {}}"#)), Ok(vec![]));
        // Huge: a reply past the limit is not parsed at all.
        let huge = vec![b' '; MAX_SECRET_RESPONSE_BYTES + 1];
        assert_eq!(registry_auths(&huge), Err(SecretError::TooLarge(MAX_SECRET_RESPONSE_BYTES + 1)));
        // Deeply nested JSON is refused by the parser's depth limit, not the stack.
        let deep = alloc::format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(registry_auths(&secret(t, k, deep.as_bytes())), Err(SecretError::NotJson));
        // Many registries: at most MAX_ENTRIES_PER_SECRET are kept.
        let many: Map<String, Value> =
            (0..200).map(|i| (format!("r{i}.example.com"), json!({"auth": "dTpw"}))).collect();
        let config = serde_json::to_vec(&json!({"auths": many})).unwrap();
        assert_eq!(registry_auths(&secret(t, k, &config)).unwrap().len(), MAX_ENTRIES_PER_SECRET);
        // Every prefix of a good secret is an answer, not a panic.
        let good = secret(t, k, br#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}"#);
        for cut in 0..good.len() {
            let _ = registry_auths(&good[..cut]);
        }
        for e in [
            SecretError::TooLarge(9),
            SecretError::NotASecret,
            SecretError::MissingKey(k),
            SecretError::NotBase64(k),
            SecretError::NotJson,
            SecretError::NoAuths,
        ] {
            assert!(!format!("{e}").is_empty());
        }
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        for ok in ["regcred", "a", "my.reg-cred.2"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "Reg", "-a", "a-", "a..b", "../nodes", "a/b", "a b", "a%2F", &"a".repeat(254)] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
