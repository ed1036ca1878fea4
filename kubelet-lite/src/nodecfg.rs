//! The node's boot configuration: which API server to join, how to trust it, the node's
//! credential and name. The runner writes it from a kubeconfig into the boot image (a boot
//! module, `node.cfg` on the ISO); the kernel reads it with [`NodeBootConfig::from_module`].
//!
//! Layout: the 9 bytes `CRXNODE1\n`, then one JSON object with the fields of
//! [`NodeBootConfig`] in camelCase. Unknown fields are refused, so a typo is an error and
//! not a silent default. The token is never shown by `Debug` or `Display`.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// The first bytes of a node configuration module.
pub const MAGIC: &[u8; 9] = b"CRXNODE1\n";
/// The largest module accepted.
pub const MAX_MODULE: usize = 256 * 1024;
/// The largest CA bundle accepted.
pub const MAX_CA: usize = 128 * 1024;
/// The longest bearer token accepted.
pub const MAX_TOKEN: usize = 4096;

/// What the node needs to join a cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBootConfig {
    /// The Node's name: a lowercase RFC 1123 subdomain.
    pub node_name: String,
    /// The API server: `https://HOST[:PORT]`, HOST an IPv4 address or a DNS name.
    pub server: String,
    /// The name to verify the server's certificate against, when it is not the server's
    /// host (the kubeconfig's `tls-server-name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The cluster CA bundle, PEM.
    pub certificate_authority: String,
    /// The node's bearer token.
    pub token: String,
}

/// An API server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server<'a> {
    /// The host as written: an IPv4 address or a DNS name.
    pub host: &'a str,
    /// The port (443 when the URL gives none).
    pub port: u16,
}

/// Why a node configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeConfigError {
    /// The module does not start with [`MAGIC`].
    NotANodeConfig,
    /// Larger than [`MAX_MODULE`].
    TooLarge(usize),
    /// Not JSON of the expected shape (the parser's message, which names the field).
    Json(String),
    /// The node name is not a lowercase RFC 1123 subdomain.
    BadNodeName,
    /// The server is not `https://HOST[:PORT]`.
    BadServer(&'static str),
    /// `tlsServerName` is neither a DNS name nor an IPv4 address.
    BadTlsServerName,
    /// The CA bundle holds no PEM certificate, or is larger than [`MAX_CA`].
    BadCertificateAuthority(&'static str),
    /// The token is empty, too long, or holds characters a header cannot carry.
    BadToken,
}

impl fmt::Display for NodeConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeConfigError::NotANodeConfig => f.write_str("not a node configuration (no CRXNODE1 header)"),
            NodeConfigError::TooLarge(n) => write!(f, "{n} bytes, more than the {MAX_MODULE} allowed"),
            NodeConfigError::Json(e) => write!(f, "malformed: {e}"),
            NodeConfigError::BadNodeName => f.write_str(
                "nodeName must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', at most 253 characters)",
            ),
            NodeConfigError::BadServer(why) => write!(f, "server: {why}"),
            NodeConfigError::BadTlsServerName => f.write_str("tlsServerName is neither a DNS name nor an IPv4 address"),
            NodeConfigError::BadCertificateAuthority(why) => write!(f, "certificateAuthority: {why}"),
            NodeConfigError::BadToken => {
                f.write_str("token must be 1 to 4096 visible ASCII characters without spaces")
            }
        }
    }
}

impl fmt::Debug for NodeBootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBootConfig")
            .field("node_name", &self.node_name)
            .field("server", &self.server)
            .field("tls_server_name", &self.tls_server_name)
            .field("certificates", &self.certificate_count())
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .finish()
    }
}

impl fmt::Display for NodeBootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, API server {}", self.node_name, self.server)?;
        if let Some(n) = &self.tls_server_name {
            write!(f, " (certificate name {n})")?;
        }
        let n = self.certificate_count();
        write!(f, ", CA {n} certificate{}, token {} bytes", if n == 1 { "" } else { "s" }, self.token.len())
    }
}

/// Whether `s` is a lowercase RFC 1123 subdomain, as Kubernetes object names are.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && !(p.len() > 1 && p.starts_with('0'))
                && p.parse::<u8>().is_ok()
        })
}

fn is_host_name(s: &str) -> bool {
    let lower: String = s.chars().map(|c| c.to_ascii_lowercase()).collect();
    is_dns1123_subdomain(&lower)
        && !lower.rsplit('.').next().is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
}

/// Splits `https://HOST[:PORT]` (a trailing `/` allowed).
pub fn parse_server(url: &str) -> Result<Server<'_>, NodeConfigError> {
    let rest = url.strip_prefix("https://").ok_or(NodeConfigError::BadServer("must start with https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(NodeConfigError::BadServer("a path after the host is not supported"));
    }
    if rest.contains('@') {
        return Err(NodeConfigError::BadServer("user information in the URL is not supported"));
    }
    if rest.starts_with('[') {
        return Err(NodeConfigError::BadServer("IPv6 addresses are not supported"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = match p.parse::<u16>() {
                Ok(n) if n > 0 && !p.starts_with(['0', '+']) => n,
                _ => return Err(NodeConfigError::BadServer("the port is not 1 to 65535")),
            };
            (h, port)
        }
        None => (rest, 443),
    };
    if !(is_ipv4(host) || is_host_name(host)) {
        return Err(NodeConfigError::BadServer("the host is neither an IPv4 address nor a DNS name"));
    }
    Ok(Server { host, port })
}

/// The DER bytes of each `CERTIFICATE` block in `pem`, in order. Text outside blocks is
/// ignored, as PEM readers do; a block that is not base64 or is unterminated is an error.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body.find(END).ok_or("a certificate block has no END line")?;
        let b64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "a certificate block is not base64")?;
        if der.is_empty() {
            return Err("a certificate block is empty");
        }
        out.push(der);
        rest = &body[end + END.len()..];
    }
    Ok(out)
}

impl NodeBootConfig {
    /// The number of certificates in the CA bundle (0 when it cannot be read).
    pub fn certificate_count(&self) -> usize {
        pem_certificates(&self.certificate_authority).map_or(0, |c| c.len())
    }

    /// The API server's host and port.
    pub fn server(&self) -> Result<Server<'_>, NodeConfigError> {
        parse_server(&self.server)
    }

    /// The name the server's certificate must carry.
    pub fn verify_name(&self) -> Result<&str, NodeConfigError> {
        match &self.tls_server_name {
            Some(n) => Ok(n),
            None => Ok(self.server()?.host),
        }
    }

    /// Checks every field.
    pub fn check(&self) -> Result<(), NodeConfigError> {
        if !is_dns1123_subdomain(&self.node_name) {
            return Err(NodeConfigError::BadNodeName);
        }
        self.server()?;
        if let Some(n) = &self.tls_server_name {
            if !(is_ipv4(n) || is_host_name(n)) {
                return Err(NodeConfigError::BadTlsServerName);
            }
        }
        if self.certificate_authority.len() > MAX_CA {
            return Err(NodeConfigError::BadCertificateAuthority("larger than 128 KiB"));
        }
        match pem_certificates(&self.certificate_authority) {
            Err(why) => return Err(NodeConfigError::BadCertificateAuthority(why)),
            Ok(c) if c.is_empty() => {
                return Err(NodeConfigError::BadCertificateAuthority("no PEM CERTIFICATE block"))
            }
            Ok(_) => {}
        }
        if self.token.is_empty()
            || self.token.len() > MAX_TOKEN
            || !self.token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(NodeConfigError::BadToken);
        }
        Ok(())
    }

    /// Whether `bytes` claims to be a node configuration (its header).
    pub fn is_module(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Reads and checks a module.
    pub fn from_module(bytes: &[u8]) -> Result<NodeBootConfig, NodeConfigError> {
        let json = bytes.strip_prefix(&MAGIC[..]).ok_or(NodeConfigError::NotANodeConfig)?;
        if bytes.len() > MAX_MODULE {
            return Err(NodeConfigError::TooLarge(bytes.len()));
        }
        // Boot loaders may pad a module with zeroes.
        let end = json.iter().rposition(|&b| b != 0 && !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        let c: NodeBootConfig =
            serde_json::from_slice(&json[..end]).map_err(|e| NodeConfigError::Json(alloc::format!("{e}")))?;
        c.check()?;
        Ok(c)
    }

    /// The module's bytes, after checking every field.
    pub fn to_module(&self) -> Result<Vec<u8>, NodeConfigError> {
        self.check()?;
        let mut out = Vec::from(&MAGIC[..]);
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| NodeConfigError::Json(alloc::format!("{e}")))?;
        out.extend_from_slice(&json);
        out.push(b'\n');
        if out.len() > MAX_MODULE {
            return Err(NodeConfigError::TooLarge(out.len()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBAQ==\n-----END CERTIFICATE-----\n";

    fn good() -> NodeBootConfig {
        NodeBootConfig {
            node_name: "node-1.example".into(),
            server: "https://10.0.2.100:6443".into(),
            tls_server_name: Some("127.0.0.1".into()),
            certificate_authority: CA.into(),
            token: "node-1.abcdef0123456789".into(),
        }
    }

    #[test]
    fn a_module_round_trips_and_hides_its_token() {
        let c = good();
        let m = c.to_module().unwrap();
        assert!(m.starts_with(b"CRXNODE1\n{"));
        assert!(NodeBootConfig::is_module(&m));
        let mut padded = m.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(NodeBootConfig::from_module(&padded).unwrap(), c);
        let shown = alloc::format!("{c} {c:?}");
        assert!(!shown.contains("abcdef"), "{shown}");
        assert_eq!(
            c.to_string(),
            "node-1.example, API server https://10.0.2.100:6443 (certificate name 127.0.0.1), CA 1 certificate, \
             token 23 bytes"
        );
        assert_eq!(c.verify_name(), Ok("127.0.0.1"));
        let plain = NodeBootConfig { tls_server_name: None, ..good() };
        assert_eq!(plain.verify_name(), Ok("10.0.2.100"));
        assert_eq!(plain.server().unwrap(), Server { host: "10.0.2.100", port: 6443 });
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("https://api.example.com").unwrap(),
            Server { host: "api.example.com", port: 443 }
        );
        assert_eq!(parse_server("https://API.example.com:8443/").unwrap().port, 8443);
        for (url, why) in [
            ("http://10.0.0.1:6443", "must start with https://"),
            ("10.0.0.1:6443", "must start with https://"),
            ("https://10.0.0.1:6443/k8s", "a path after the host is not supported"),
            ("https://u:p@10.0.0.1", "user information in the URL is not supported"),
            ("https://[::1]:6443", "IPv6 addresses are not supported"),
            ("https://10.0.0.1:0", "the port is not 1 to 65535"),
            ("https://10.0.0.1:65536", "the port is not 1 to 65535"),
            ("https://10.0.0.1:", "the port is not 1 to 65535"),
            ("https://10.0.0.256", "the host is neither an IPv4 address nor a DNS name"),
            ("https://", "the host is neither an IPv4 address nor a DNS name"),
            ("https://a_b:1", "the host is neither an IPv4 address nor a DNS name"),
        ] {
            assert_eq!(parse_server(url), Err(NodeConfigError::BadServer(why)), "{url}");
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = |f: fn(&mut NodeBootConfig)| {
            let mut c = good();
            f(&mut c);
            c.check().unwrap_err()
        };
        assert_eq!(bad(|c| c.node_name = "Node_1".into()), NodeConfigError::BadNodeName);
        assert_eq!(bad(|c| c.node_name = String::new()), NodeConfigError::BadNodeName);
        assert_eq!(bad(|c| c.node_name = "a".repeat(254)), NodeConfigError::BadNodeName);
        assert_eq!(bad(|c| c.tls_server_name = Some("x y".into())), NodeConfigError::BadTlsServerName);
        assert_eq!(
            bad(|c| c.certificate_authority = "hello".into()),
            NodeConfigError::BadCertificateAuthority("no PEM CERTIFICATE block")
        );
        assert_eq!(
            bad(|c| c.certificate_authority = "-----BEGIN CERTIFICATE-----\n!!\n".into()),
            NodeConfigError::BadCertificateAuthority("a certificate block has no END line")
        );
        assert_eq!(
            bad(|c| c.certificate_authority =
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----".into()),
            NodeConfigError::BadCertificateAuthority("a certificate block is not base64")
        );
        assert_eq!(bad(|c| c.token = String::new()), NodeConfigError::BadToken);
        assert_eq!(bad(|c| c.token = "a b".into()), NodeConfigError::BadToken);
        assert_eq!(bad(|c| c.token = "a\r\nX-Evil: 1".into()), NodeConfigError::BadToken);
        assert_eq!(bad(|c| c.token = "t".repeat(4097)), NodeConfigError::BadToken);
        assert!(good().to_module().is_ok());
        let mut c = good();
        c.token = String::new();
        assert_eq!(c.to_module(), Err(NodeConfigError::BadToken));
    }

    #[test]
    fn malformed_modules_are_errors() {
        assert_eq!(NodeBootConfig::from_module(b"{}"), Err(NodeConfigError::NotANodeConfig));
        assert_eq!(NodeBootConfig::from_module(b""), Err(NodeConfigError::NotANodeConfig));
        let json = |s: &str| NodeBootConfig::from_module(&[&MAGIC[..], s.as_bytes()].concat());
        assert!(matches!(json(""), Err(NodeConfigError::Json(_))));
        assert!(matches!(json("[]"), Err(NodeConfigError::Json(_))));
        let Err(NodeConfigError::Json(e)) = json(r#"{"nodeName":"n"}"#) else { panic!() };
        assert!(e.contains("missing field `server`"), "{e}");
        let m = String::from_utf8(good().to_module().unwrap()).unwrap().replace("\"token\"", "\"tokne\"");
        let Err(NodeConfigError::Json(e)) = NodeBootConfig::from_module(m.as_bytes()) else { panic!() };
        assert!(e.contains("unknown field `tokne`"), "{e}");
        let deep = "[".repeat(10_000);
        assert!(matches!(json(&deep), Err(NodeConfigError::Json(_))));
        let huge = [&MAGIC[..], &alloc::vec![b' '; MAX_MODULE]].concat();
        assert_eq!(NodeBootConfig::from_module(&huge), Err(NodeConfigError::TooLarge(MAX_MODULE + 9)));
        for cut in 0..good().to_module().unwrap().len() {
            let _ = NodeBootConfig::from_module(&good().to_module().unwrap()[..cut]);
        }
    }

    #[test]
    fn pem_blocks() {
        let two = alloc::format!("junk\n{CA}between\n{CA}");
        assert_eq!(pem_certificates(&two).unwrap(), alloc::vec![alloc::vec![0x30, 0x82, 0x01, 0x01]; 2]);
        assert_eq!(pem_certificates("").unwrap().len(), 0);
        assert_eq!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"),
            Err("a certificate block is empty")
        );
        assert!(is_dns1123_subdomain("a.b-c.d1"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("-a"));
    }
}
