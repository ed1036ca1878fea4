//! Bearer tokens: one admin token and one token per node name, kept in `DIR/tokens.json`.
//!
//! The admin token is user `admin` in group `system:masters`; a node token is user
//! `system:node:<name>` in group `system:nodes`, and [`crate::authz`] lets it act only as that
//! node. Nodes are added with `--node NAME` (a directory without any gets `n1`); tokens are
//! kept across restarts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// The token file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tokens {
    /// The admin token.
    pub admin: String,
    /// Node name to token.
    pub nodes: BTreeMap<String, String>,
}

/// The node a new state directory gets when no `--node` is given.
pub const DEFAULT_NODE: &str = "n1";

fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Tokens {
    /// Loads `DIR/tokens.json` (or starts a new one with an admin token), adds a token for
    /// every name in `nodes` that has none, and for `n1` when there is no node at all, and
    /// saves the file when it changed. Names must be DNS subdomains (they name files too).
    pub fn load_or_create(dir: &Path, nodes: &[String]) -> io::Result<Self> {
        let path = dir.join("tokens.json");
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                serde_json::from_str::<Tokens>(&text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut t = existing.clone().unwrap_or_else(|| Tokens { admin: new_token(), nodes: BTreeMap::new() });
        for n in nodes {
            let errs = crate::validate::dns1123_subdomain_errors(n);
            if !errs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("node name {n:?}: {}", errs.join("; ")),
                ));
            }
            t.nodes.entry(n.clone()).or_insert_with(new_token);
        }
        if t.nodes.is_empty() {
            t.nodes.insert(DEFAULT_NODE.to_string(), new_token());
        }
        if existing.as_ref() != Some(&t) {
            let text = serde_json::to_string_pretty(&t).map_err(io::Error::other)?;
            crate::tls::write_private(&path, &text)?;
        } else {
            // Kept as it is, but readable by its owner only, whatever mode it had.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(t)
    }

    /// The user a `Authorization` header value authenticates, if any. The header is read as
    /// the apiserver's bearer-token authenticator reads it: surrounding spaces trimmed, split
    /// at spaces, the scheme `bearer` in any case, the token the second part (so it may not
    /// be empty, and a third part is ignored).
    pub fn authenticate(&self, header: Option<&str>) -> Option<User> {
        let mut parts = header?.trim().splitn(3, ' ');
        if !parts.next()?.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = parts.next()?;
        if token.is_empty() {
            return None;
        }
        // Every known token is compared, each in constant time, so neither the comparison
        // nor the number of tokens tried tells a client how much of a guess was right.
        let mut found: Option<User> = None;
        if same_token(token, &self.admin) {
            found = Some(User { name: "admin".into(), groups: vec!["system:masters".into()] });
        }
        for (node, t) in &self.nodes {
            if same_token(token, t) && found.is_none() {
                found =
                    Some(User { name: format!("system:node:{node}"), groups: vec!["system:nodes".into()] });
            }
        }
        found
    }
}

/// Whether `given` is `known`, in time that depends only on their lengths.
fn same_token(given: &str, known: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(known.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_users() {
        let mut nodes = BTreeMap::new();
        nodes.insert("n1".to_string(), "nodetok".to_string());
        let t = Tokens { admin: "admintok".into(), nodes };
        assert_eq!(t.authenticate(Some("Bearer admintok")).unwrap().name, "admin");
        assert_eq!(t.authenticate(Some("Bearer nodetok")).unwrap().name, "system:node:n1");
        assert!(t.authenticate(Some("Bearer other")).is_none());
        assert!(t.authenticate(Some("Basic admintok")).is_none());
        assert!(t.authenticate(Some("Bearer ")).is_none());
        // The scheme in any case, as Go's bearer-token authenticator compares it.
        for ok in ["bearer admintok", "BEARER admintok", "  Bearer admintok  ", "Bearer admintok extra"] {
            assert_eq!(t.authenticate(Some(ok)).map(|u| u.name).as_deref(), Some("admin"), "{ok:?}");
        }
        for bad in ["Bearer  admintok", "Bearer", "Bearer\tadmintok", "Bearerx admintok", "admintok"] {
            assert!(t.authenticate(Some(bad)).is_none(), "{bad:?}");
        }
        assert!(t.authenticate(None).is_none());
        // A prefix, an extension and a one-byte change of a real token are all refused.
        for guess in ["Bearer nodeto", "Bearer nodetokx", "Bearer nodetoK", "Bearer admintoknodetok"] {
            assert!(t.authenticate(Some(guess)).is_none(), "{guess}");
        }
    }

    #[test]
    fn node_tokens_are_added_and_kept() {
        let dir = std::env::temp_dir().join(format!("cp-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = Tokens::load_or_create(&dir, &[]).unwrap();
        assert_eq!(first.nodes.keys().collect::<Vec<_>>(), ["n1"]);
        let second = Tokens::load_or_create(&dir, &["n2".to_string()]).unwrap();
        assert_eq!(second.admin, first.admin);
        assert_eq!(second.nodes["n1"], first.nodes["n1"]);
        assert_ne!(second.nodes["n2"], second.nodes["n1"]);
        let again = Tokens::load_or_create(&dir, &[]).unwrap();
        assert_eq!(again, second);
        for bad in ["../etc", "UPPER", "", "a/b"] {
            assert!(Tokens::load_or_create(&dir, &[bad.to_string()]).is_err(), "{bad:?}");
        }
        // A tokens file left readable by others is made private, changed or not.
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("tokens.json");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Tokens::load_or_create(&dir, &[]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Tokens::load_or_create(&dir, &["n3".to_string()]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(dir.join("tokens.json"), "{not json").unwrap();
        assert!(Tokens::load_or_create(&dir, &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
