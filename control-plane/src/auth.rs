//! Bearer tokens: one admin token and one token per node name, kept in `DIR/tokens.json`.
//!
//! The admin token is user `admin` in group `system:masters`; a node token is user
//! `system:node:<name>` in group `system:nodes`. `node.kubeconfig` carries the token of the
//! node named `node` by default; more node tokens can be added to the file by hand.

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

fn new_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

impl Tokens {
    /// Loads `DIR/tokens.json` or creates it with an admin token and a token for node `node`.
    pub fn load_or_create(dir: &Path) -> io::Result<Self> {
        let path = dir.join("tokens.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let mut nodes = BTreeMap::new();
        nodes.insert("node".to_string(), new_token());
        let t = Tokens { admin: new_token(), nodes };
        let text = serde_json::to_string_pretty(&t).map_err(io::Error::other)?;
        crate::tls::write_private(&path, &text)?;
        Ok(t)
    }

    /// The user a `Authorization` header value authenticates, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<User> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        if token == self.admin {
            return Some(User { name: "admin".into(), groups: vec!["system:masters".into()] });
        }
        self.nodes.iter().find(|(_, t)| t.as_str() == token).map(|(node, _)| User {
            name: format!("system:node:{node}"),
            groups: vec!["system:nodes".into()],
        })
    }
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
        assert!(t.authenticate(None).is_none());
    }
}
