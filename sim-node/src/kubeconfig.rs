//! The few kubeconfig fields sim-node needs: the current cluster's server and CA, and the
//! user's bearer token. Reads the YAML layout kubectl writes (block style, one key per
//! line) and its JSON equivalent; takes the first value of each key.

use std::fmt;

/// What sim-node takes from a kubeconfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubeconfig {
    pub server: String,
    /// PEM bytes of the CA (from certificate-authority-data or certificate-authority).
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<String>,
    pub insecure: bool,
    /// The name to verify the server's certificate against (`tls-server-name`).
    pub tls_server_name: Option<String>,
}

/// Why a kubeconfig could not be used.
#[derive(Debug)]
pub enum KubeconfigError {
    /// No `server:` entry.
    NoServer,
    /// certificate-authority-data is not base64.
    BadCaData,
    /// A referenced file could not be read.
    Io(String, std::io::Error),
}

impl fmt::Display for KubeconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeconfigError::NoServer => f.write_str("kubeconfig has no cluster server"),
            KubeconfigError::BadCaData => f.write_str("kubeconfig certificate-authority-data is not base64"),
            KubeconfigError::Io(p, e) => write!(f, "cannot read {p}: {e}"),
        }
    }
}

fn value_of(text: &str, key: &str) -> Option<String> {
    for line in text.lines() {
        let l = line.trim().trim_start_matches("- ").trim();
        let l = l.strip_prefix('"').map(|r| r.replacen('"', "", 1)).unwrap_or_else(|| l.to_string());
        if let Some(rest) = l.strip_prefix(key).and_then(|r| r.trim_start().strip_prefix(':')) {
            let rest = rest.trim();
            let v = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => rest[1..].split(q).next().unwrap_or(""),
                _ => rest.split([',', '}', ']', ' ']).next().unwrap_or(""),
            };
            if !v.is_empty() {
                return Some(v.to_string());
            }
        }
    }
    None
}

impl Kubeconfig {
    /// Parses kubeconfig text; relative file references resolve against `dir`.
    pub fn parse(text: &str, dir: &std::path::Path) -> Result<Kubeconfig, KubeconfigError> {
        use base64::Engine as _;
        let server = value_of(text, "server").ok_or(KubeconfigError::NoServer)?;
        let ca_pem =
            match (value_of(text, "certificate-authority-data"), value_of(text, "certificate-authority")) {
                (Some(d), _) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .map_err(|_| KubeconfigError::BadCaData)?,
                ),
                (None, Some(p)) => {
                    let path = dir.join(&p);
                    Some(
                        std::fs::read(&path)
                            .map_err(|e| KubeconfigError::Io(path.display().to_string(), e))?,
                    )
                }
                _ => None,
            };
        Ok(Kubeconfig {
            server,
            ca_pem,
            token: value_of(text, "token"),
            insecure: value_of(text, "insecure-skip-tls-verify").as_deref() == Some("true"),
            tls_server_name: value_of(text, "tls-server-name"),
        })
    }

    /// Reads and parses a kubeconfig file.
    pub fn load(path: &std::path::Path) -> Result<Kubeconfig, KubeconfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| KubeconfigError::Io(path.display().to_string(), e))?;
        Kubeconfig::parse(&text, path.parent().unwrap_or(std::path::Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_json() {
        let yaml = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: aGVsbG8=\n    server: https://127.0.0.1:6443\n  name: dev\nusers:\n- name: n1\n  user:\n    token: abc.def\n";
        let k = Kubeconfig::parse(yaml, std::path::Path::new(".")).unwrap();
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.ca_pem.as_deref(), Some(&b"hello"[..]));
        assert_eq!(k.token.as_deref(), Some("abc.def"));
        let json = "{\"clusters\":[{\"cluster\":{\n\"server\": \"http://127.0.0.1:8080\",\n\"insecure-skip-tls-verify\": true}}],\n\"users\":[{\"user\":{\n\"token\": \"t\"}}]}";
        let k = Kubeconfig::parse(json, std::path::Path::new(".")).unwrap();
        assert_eq!(
            (k.server.as_str(), k.token.as_deref(), k.insecure),
            ("http://127.0.0.1:8080", Some("t"), true)
        );
        assert!(matches!(
            Kubeconfig::parse("users: []", std::path::Path::new(".")),
            Err(KubeconfigError::NoServer)
        ));
        assert!(matches!(
            Kubeconfig::parse("server: x\ncertificate-authority-data: !!!", std::path::Path::new(".")),
            Err(KubeconfigError::BadCaData)
        ));
    }
}
