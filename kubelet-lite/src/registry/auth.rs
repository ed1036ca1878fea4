//! Registry authentication: the `WWW-Authenticate` challenge of a 401 (RFC 7235, and the
//! distribution token spec's `Bearer realm=...,service=...,scope=...`), token URLs and
//! token responses.
//!
//! No-panic contract: every function here takes header and body bytes from the network and
//! returns a value or a [`PullError`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;

use super::{PullError, Scheme};

/// The longest token accepted from a token server.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`: send the credentials.
    Basic,
    /// `Bearer realm=...`: fetch a token from `realm` for `service` and `scope`.
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

fn bad(why: &str) -> PullError {
    PullError::BadChallenge(why.to_string())
}

/// Parses `auth-param` pairs: `k=v` or `k="quoted, \"escaped\""`, comma-separated.
fn params(s: &str) -> Result<Vec<(String, String)>, PullError> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| bad("a parameter without '='"))?;
        let key = rest.get(..eq).unwrap_or("").trim().to_ascii_lowercase();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad("a malformed parameter name"));
        }
        rest = rest.get(eq + 1..).unwrap_or("").trim_start();
        let mut value = String::new();
        if let Some(q) = rest.strip_prefix('"') {
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => {
                        value.push(chars.next().map(|(_, c)| c).ok_or_else(|| bad("an unterminated string"))?)
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| bad("an unterminated string"))?;
            rest = q.get(end..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value.push_str(rest.get(..end).unwrap_or("").trim());
            rest = rest.get(end..).unwrap_or("");
        }
        out.push((key, value));
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(bad("parameters not separated by ','"));
        }
    }
    Ok(out)
}

/// Parses a `WWW-Authenticate` value with one challenge.
pub fn parse_challenge(value: &str) -> Result<Challenge, PullError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let ps = params(rest)?;
    let get = |k: &str| ps.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if scheme.eq_ignore_ascii_case("basic") {
        Ok(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let realm = get("realm").ok_or_else(|| bad("a Bearer challenge without realm"))?;
        Ok(Challenge::Bearer { realm, service: get("service"), scope: get("scope") })
    } else {
        Err(PullError::BadChallenge(format!(
            "unsupported scheme {:?}",
            scheme.chars().take(32).collect::<String>()
        )))
    }
}

/// An absolute `http(s)://host[:port]/path[?query]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses a token realm. A plain-HTTP realm is accepted only when the registry itself is
/// spoken to over plain HTTP (the user named it insecure); otherwise a token, and the
/// credentials sent for it, would cross the network in the clear.
pub fn parse_realm(realm: &str, registry_scheme: Scheme) -> Result<Url, PullError> {
    let (scheme, rest) = if let Some(r) = realm.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = realm.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(PullError::BadChallenge(format!("realm {:?} is not an http(s) URL", short(realm))));
    };
    if scheme == Scheme::Http && registry_scheme == Scheme::Https {
        return Err(PullError::InsecureRealm(short(realm)));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = rest.get(..split).unwrap_or("");
    let path = rest.get(split..).unwrap_or("");
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !host_ok || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(PullError::BadChallenge(format!("realm {:?} is not a usable URL", short(realm))));
    }
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    Ok(Url { scheme, host: host.to_string(), path })
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The token of a token server's response (`token`, or OAuth2's `access_token`): visible
/// ASCII only, so it cannot break the request it is sent in.
pub fn parse_token(body: &[u8]) -> Result<String, PullError> {
    let t: TokenBody = serde_json::from_slice(body)
        .map_err(|e| PullError::Json { what: "token response", message: e.to_string() })?;
    let token = t.token.filter(|t| !t.is_empty()).or(t.access_token).unwrap_or_default();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PullError::Json { what: "token response", message: "no usable token".to_string() });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(), Challenge::Basic);
        assert_eq!(
            parse_challenge(r#"bearer realm=http://h/t , service="s\"x""#).unwrap(),
            Challenge::Bearer { realm: "http://h/t".into(), service: Some("s\"x".into()), scope: None }
        );
        for bad in [
            "Bearer service=x",
            "Bearer realm=\"unterminated",
            "Negotiate abc",
            "Bearer realm",
            "Bearer realm=\"a\" service=\"b\"",
            "Bearer =x",
        ] {
            assert!(matches!(parse_challenge(bad), Err(PullError::BadChallenge(_))), "{bad}");
        }
    }

    #[test]
    fn realms() {
        let u = parse_realm("https://auth.example:8443/token?x=1", Scheme::Https).unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.path.as_str()),
            (Scheme::Https, "auth.example:8443", "/token?x=1")
        );
        assert_eq!(parse_realm("http://127.0.0.1:5001", Scheme::Http).unwrap().path, "/");
        assert!(matches!(
            parse_realm("http://auth.example/token", Scheme::Https),
            Err(PullError::InsecureRealm(_))
        ));
        for bad in ["ftp://x/y", "https:///t", "https://a b/t", "https://h/t\r\nX: y", "https://h@x/t"] {
            assert!(matches!(parse_realm(bad, Scheme::Https), Err(PullError::BadChallenge(_))), "{bad}");
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(parse_token(br#"{"token":"abc"}"#).unwrap(), "abc");
        assert_eq!(parse_token(br#"{"access_token":"def","expires_in":300}"#).unwrap(), "def");
        for bad in [&br#"{}"#[..], br#"{"token":"a b"}"#, br#"{"token":"a\r\nX: y"}"#, b"nope"] {
            assert!(matches!(parse_token(bad), Err(PullError::Json { .. })));
        }
    }
}
