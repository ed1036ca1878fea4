//! The node's boot configuration: which API server to join, how to trust it, the node's
//! credential and name. The runner writes it from a kubeconfig into the boot image (a boot
//! module, `node.cfg` on the ISO); the kernel reads it with [`NodeBootConfig::from_module`].
//!
//! Layout: the 9 bytes `CRXNODE1\n`, then one JSON object with the fields of
//! [`NodeBootConfig`] in camelCase. Unknown fields are refused, so a typo is an error and
//! not a silent default. The token and the kubelet's private key are never shown by
//! `Debug` or `Display`.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// The first bytes of a node configuration module.
pub const MAGIC: &[u8; 9] = b"CRXNODE1\n";
/// The largest module accepted: room for the largest CA bundles (the cluster's and the
/// registries'), kubelet certificate chain, key and token, with JSON's escapes.
pub const MAX_MODULE: usize = 480 * 1024;
/// Most registries named in [`Registries::insecure`] and [`Registries::endpoints`] each.
pub const MAX_REGISTRIES: usize = 32;
/// The largest CA bundle accepted.
pub const MAX_CA: usize = 128 * 1024;
/// The longest bearer token accepted.
pub const MAX_TOKEN: usize = 4096;
/// The largest kubelet serving certificate chain accepted.
pub const MAX_KUBELET_CERTIFICATE: usize = 64 * 1024;
/// The largest kubelet private key accepted (an ECDSA P-256 key is about 240 bytes of PEM).
pub const MAX_KUBELET_KEY: usize = 8 * 1024;

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
    /// The address the node reports as its InternalIP (as kubelet's `--node-ip`), when the
    /// control plane reaches it at another address than its own, e.g. through a port
    /// forward: an IPv4 address.
    #[serde(rename = "nodeIP", default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    /// The port the node reports in `daemonEndpoints.kubeletEndpoint.Port`, when the control
    /// plane reaches its kubelet endpoint on another port than the one it serves on (a
    /// forwarded host port): 1 to 65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_port: Option<u16>,
    /// The certificate chain (PEM, leaf first) the node's kubelet HTTPS endpoint serves
    /// with; given with [`NodeBootConfig::kubelet_key`] or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_certificate: Option<String>,
    /// The private key of the kubelet's serving certificate: PEM `PRIVATE KEY` (PKCS#8)
    /// holding an ECDSA P-256 key. Never shown by `Debug` or `Display`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_key: Option<String>,
    /// How the node reaches image registries.
    #[serde(default, skip_serializing_if = "Registries::is_empty")]
    pub registries: Registries,
}

/// How the node reaches image registries (what containerd's registry configuration says).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registries {
    /// Registries (`host[:port]`, as image references name them) reached over plain HTTP;
    /// every other registry is reached over TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure: Vec<String>,
    /// Where the node connects for a registry that is not where its name says: registry →
    /// `HOST:PORT` (an IPv4 address or a DNS name). For example the registry a host names
    /// `127.0.0.1:5000`, which a node under QEMU reaches through a forward at
    /// `10.0.2.100:5000`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// The CA bundle (PEM) HTTPS registries are verified against; without one, only
    /// insecure registries can be pulled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

impl Registries {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.insecure.is_empty() && self.endpoints.is_empty() && self.certificate_authority.is_none()
    }

    /// Where to connect for `registry`: its endpoint, else the registry itself.
    pub fn endpoint<'a>(&'a self, registry: &'a str) -> &'a str {
        self.endpoints.get(registry).map(String::as_str).unwrap_or(registry)
    }

    fn check(&self) -> Result<(), String> {
        let is_registry =
            |r: &str| crate::image::Reference::parse(&format!("{r}/x")).is_ok_and(|x| x.registry == r);
        if self.insecure.len() > MAX_REGISTRIES || self.endpoints.len() > MAX_REGISTRIES {
            return Err(format!(
                "at most {MAX_REGISTRIES} insecure registries and {MAX_REGISTRIES} endpoints"
            ));
        }
        for r in self.insecure.iter().chain(self.endpoints.keys()) {
            if !is_registry(r) {
                return Err(format!("{r:?} is not a registry (HOST[:PORT], as an image reference names it)"));
            }
        }
        for (r, e) in &self.endpoints {
            let ok = e.rsplit_once(':').is_some_and(|(h, p)| {
                (is_ipv4(h) || is_host_name(h))
                    && p.parse::<u16>().is_ok_and(|n| n > 0)
                    && !p.starts_with(['0', '+'])
            });
            if !ok {
                return Err(format!("the endpoint of {r} is not HOST:PORT: {e:?}"));
            }
        }
        if let Some(ca) = &self.certificate_authority {
            if ca.len() > MAX_CA {
                return Err(String::from("the certificate authority is larger than 128 KiB"));
            }
            match pem_certificates(ca) {
                Err(why) => return Err(format!("certificate authority: {why}")),
                Ok(c) if c.is_empty() => {
                    return Err(String::from("certificate authority: no PEM CERTIFICATE block"))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
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
    /// `nodeIP` is not an IPv4 address.
    BadNodeIp,
    /// `kubeletPort` is 0.
    BadKubeletPort,
    /// `kubeletCertificate` holds no PEM certificate, a malformed one, or is larger than
    /// [`MAX_KUBELET_CERTIFICATE`].
    BadKubeletCertificate(&'static str),
    /// `kubeletKey` is not one PEM `PRIVATE KEY` block of an ECDSA P-256 key, or is larger
    /// than [`MAX_KUBELET_KEY`].
    BadKubeletKey(&'static str),
    /// Only one of `kubeletCertificate` and `kubeletKey` is given.
    KubeletCertificateWithoutKey,
    /// `registries` holds something unusable.
    BadRegistries(String),
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
            NodeConfigError::BadNodeIp => f.write_str("nodeIP is not an IPv4 address"),
            NodeConfigError::BadKubeletPort => f.write_str("kubeletPort must be 1 to 65535"),
            NodeConfigError::BadKubeletCertificate(why) => write!(f, "kubeletCertificate: {why}"),
            NodeConfigError::BadKubeletKey(why) => write!(f, "kubeletKey: {why}"),
            NodeConfigError::KubeletCertificateWithoutKey => {
                f.write_str("kubeletCertificate and kubeletKey come together: give both or neither")
            }
            NodeConfigError::BadRegistries(why) => write!(f, "registries: {why}"),
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
            .field("node_ip", &self.node_ip)
            .field("kubelet_port", &self.kubelet_port)
            .field("kubelet_certificates", &self.kubelet_certificate.as_deref().map(certificates_in))
            .field("kubelet_key", &self.kubelet_key.as_ref().map(|k| alloc::format!("<{} bytes>", k.len())))
            .field("registries", &self.registries)
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
        write!(f, ", CA {n} certificate{}, token {} bytes", if n == 1 { "" } else { "s" }, self.token.len())?;
        if let Some(ip) = &self.node_ip {
            write!(f, ", node IP {ip}")?;
        }
        if let Some(p) = self.kubelet_port {
            write!(f, ", kubelet port {p}")?;
        }
        if let Some(c) = &self.kubelet_certificate {
            let n = certificates_in(c);
            write!(f, ", kubelet serving certificate chain of {n}")?;
        }
        if let Some(ca) = &self.registries.certificate_authority {
            write!(f, ", registry CA {} certificate(s)", certificates_in(ca))?;
        }
        if !self.registries.insecure.is_empty() {
            write!(f, ", insecure registries {}", self.registries.insecure.join(" "))?;
        }
        Ok(())
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
    pem_blocks(
        pem,
        "-----BEGIN CERTIFICATE-----",
        "-----END CERTIFICATE-----",
        [
            "a certificate block has no END line",
            "a certificate block is not base64",
            "a certificate block is empty",
        ],
    )
}

/// The DER bytes of each block between `begin` and `end` in `pem`; `why` says what is
/// wrong with an unterminated, non-base64 or empty block.
fn pem_blocks(
    pem: &str,
    begin: &str,
    end: &str,
    why: [&'static str; 3],
) -> Result<Vec<Vec<u8>>, &'static str> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(begin) {
        let body = &rest[start + begin.len()..];
        let stop = body.find(end).ok_or(why[0])?;
        let b64: String = body[..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|_| why[1])?;
        if der.is_empty() {
            return Err(why[2]);
        }
        out.push(der);
        rest = &body[stop + end.len()..];
    }
    Ok(out)
}

/// The number of certificates in a PEM chain (0 when it cannot be read).
fn certificates_in(pem: &str) -> usize {
    pem_certificates(pem).map_or(0, |c| c.len())
}

/// One DER element: its tag, its contents and what follows it. `None` when the bytes do
/// not hold a whole definite-length element.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The DER of the OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// The DER of the OID 1.2.840.10045.3.1.7 (prime256v1, P-256).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Checks that `der` is a PKCS#8 `PrivateKeyInfo` (RFC 5208, or RFC 5958 version 2) of an
/// ECDSA P-256 key: `SEQUENCE { INTEGER 0|1, SEQUENCE { id-ecPublicKey, prime256v1 },
/// OCTET STRING, ... }`.
fn check_p256_pkcs8(der: &[u8]) -> Result<(), &'static str> {
    const NOT_PKCS8: &str = "not a PKCS#8 private key";
    let (tag, info, after) = der_element(der).ok_or(NOT_PKCS8)?;
    if tag != 0x30 || !after.is_empty() {
        return Err(NOT_PKCS8);
    }
    let (tag, version, rest) = der_element(info).ok_or(NOT_PKCS8)?;
    if tag != 0x02 || !(version == [0] || version == [1]) {
        return Err(NOT_PKCS8);
    }
    let (tag, algorithm, rest) = der_element(rest).ok_or(NOT_PKCS8)?;
    if tag != 0x30 {
        return Err(NOT_PKCS8);
    }
    let (tag, oid, params) = der_element(algorithm).ok_or(NOT_PKCS8)?;
    if tag != 0x06 || oid != OID_EC_PUBLIC_KEY {
        return Err("not an ECDSA key (the kubelet serves with an ECDSA P-256 key)");
    }
    match der_element(params) {
        Some((0x06, curve, [])) if curve == OID_P256 => {}
        _ => return Err("an ECDSA key on another curve than P-256"),
    }
    match der_element(rest) {
        Some((0x04, key, _)) if !key.is_empty() => Ok(()),
        _ => Err(NOT_PKCS8),
    }
}

fn check_kubelet_key(pem: &str) -> Result<(), &'static str> {
    if pem.len() > MAX_KUBELET_KEY {
        return Err("larger than 8 KiB");
    }
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") || pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return Err("not PKCS#8: give a `PRIVATE KEY` PEM block");
    }
    let blocks = pem_blocks(
        pem,
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        ["a key block has no END line", "a key block is not base64", "a key block is empty"],
    )?;
    match blocks.as_slice() {
        [] => Err("no PEM PRIVATE KEY block"),
        [der] => check_p256_pkcs8(der),
        _ => Err("more than one PRIVATE KEY block"),
    }
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
        if let Some(ip) = &self.node_ip {
            if !is_ipv4(ip) {
                return Err(NodeConfigError::BadNodeIp);
            }
        }
        if self.kubelet_port == Some(0) {
            return Err(NodeConfigError::BadKubeletPort);
        }
        match (&self.kubelet_certificate, &self.kubelet_key) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => return Err(NodeConfigError::KubeletCertificateWithoutKey),
            (Some(cert), Some(key)) => {
                if cert.len() > MAX_KUBELET_CERTIFICATE {
                    return Err(NodeConfigError::BadKubeletCertificate("larger than 64 KiB"));
                }
                match pem_certificates(cert) {
                    Err(why) => return Err(NodeConfigError::BadKubeletCertificate(why)),
                    Ok(c) if c.is_empty() => {
                        return Err(NodeConfigError::BadKubeletCertificate("no PEM CERTIFICATE block"))
                    }
                    Ok(_) => {}
                }
                check_kubelet_key(key).map_err(NodeConfigError::BadKubeletKey)?;
            }
        }
        self.registries.check().map_err(NodeConfigError::BadRegistries)
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
            node_ip: None,
            kubelet_port: None,
            kubelet_certificate: None,
            kubelet_key: None,
            registries: Default::default(),
        }
    }

    /// A DER element of `tag` around `content` (short or two-byte long form).
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = alloc::vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// A PKCS#8 `PrivateKeyInfo` with this algorithm and curve OID, as PEM.
    fn pkcs8_pem(version: u8, algorithm: &[u8], curve: &[u8], label: &str) -> String {
        use base64::Engine as _;
        let alg = [der(0x06, algorithm), der(0x06, curve)].concat();
        let ec = der(0x30, &[der(0x02, &[1]), der(0x04, &[7; 32])].concat());
        let info = der(0x30, &[der(0x02, &[version]), der(0x30, &alg), der(0x04, &ec)].concat());
        let b64 = base64::engine::general_purpose::STANDARD.encode(info);
        alloc::format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }

    fn p256_key() -> String {
        pkcs8_pem(0, OID_EC_PUBLIC_KEY, OID_P256, "PRIVATE KEY")
    }

    fn serving() -> NodeBootConfig {
        NodeBootConfig {
            node_ip: Some("127.0.0.1".into()),
            kubelet_port: Some(40123),
            kubelet_certificate: Some(alloc::format!("{CA}{CA}")),
            kubelet_key: Some(p256_key()),
            ..good()
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
    fn the_kubelet_fields_round_trip_and_the_key_is_never_shown() {
        let c = serving();
        let m = c.to_module().unwrap();
        let text = core::str::from_utf8(&m).unwrap();
        for field in [
            "\"nodeIP\": \"127.0.0.1\"",
            "\"kubeletPort\": 40123",
            "\"kubeletCertificate\"",
            "\"kubeletKey\"",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert_eq!(NodeBootConfig::from_module(&m).unwrap(), c);
        let key_b64 = c.kubelet_key.as_deref().unwrap().lines().nth(1).unwrap().to_string();
        let shown = alloc::format!("{c} {c:?}");
        assert!(!shown.contains(&key_b64[..16]) && !shown.contains("PRIVATE"), "{shown}");
        assert_eq!(
            c.to_string(),
            "node-1.example, API server https://10.0.2.100:6443 (certificate name 127.0.0.1), CA 1 certificate, \
             token 23 bytes, node IP 127.0.0.1, kubelet port 40123, kubelet serving certificate chain of 2"
        );
        // Without them nothing is written, and older modules still read.
        let plain = good().to_module().unwrap();
        let plain_text = core::str::from_utf8(&plain).unwrap();
        assert!(!plain_text.contains("nodeIP") && !plain_text.contains("kubelet"), "{plain_text}");
        // The JSON name is `nodeIP`, as kubelet's flag spells it; serde's `nodeIp` is unknown.
        let wrong = text.replace("\"nodeIP\"", "\"nodeIp\"");
        let Err(NodeConfigError::Json(e)) = NodeBootConfig::from_module(wrong.as_bytes()) else { panic!() };
        assert!(e.contains("unknown field `nodeIp`"), "{e}");
    }

    #[test]
    fn every_bad_kubelet_field_is_named() {
        let bad = |f: fn(&mut NodeBootConfig)| {
            let mut c = serving();
            f(&mut c);
            c.check().unwrap_err()
        };
        for ip in ["", "localhost", "10.0.0.256", "::1", "1.2.3", "01.2.3.4"] {
            let mut c = serving();
            c.node_ip = Some(ip.into());
            assert_eq!(c.check(), Err(NodeConfigError::BadNodeIp), "{ip:?}");
        }
        assert_eq!(bad(|c| c.kubelet_port = Some(0)), NodeConfigError::BadKubeletPort);
        let mut c = serving();
        c.kubelet_port = Some(65535);
        assert!(c.check().is_ok());
        let m = String::from_utf8(serving().to_module().unwrap()).unwrap();
        for port in ["65536", "-1", "\"80\""] {
            let m = m.replace("\"kubeletPort\": 40123", &alloc::format!("\"kubeletPort\": {port}"));
            assert!(
                matches!(NodeBootConfig::from_module(m.as_bytes()), Err(NodeConfigError::Json(_))),
                "{port}"
            );
        }
        assert_eq!(bad(|c| c.kubelet_key = None), NodeConfigError::KubeletCertificateWithoutKey);
        assert_eq!(bad(|c| c.kubelet_certificate = None), NodeConfigError::KubeletCertificateWithoutKey);
        assert_eq!(
            bad(|c| c.kubelet_certificate = Some("junk".into())),
            NodeConfigError::BadKubeletCertificate("no PEM CERTIFICATE block")
        );
        assert_eq!(
            bad(|c| c.kubelet_certificate = Some("-----BEGIN CERTIFICATE-----\n!!\n".into())),
            NodeConfigError::BadKubeletCertificate("a certificate block has no END line")
        );
        assert_eq!(
            bad(|c| c.kubelet_certificate = Some(CA.repeat(MAX_KUBELET_CERTIFICATE / CA.len() + 1))),
            NodeConfigError::BadKubeletCertificate("larger than 64 KiB")
        );
        let key = |k: String| {
            let mut c = serving();
            c.kubelet_key = Some(k);
            c.check().unwrap_err()
        };
        assert_eq!(key("junk".into()), NodeConfigError::BadKubeletKey("no PEM PRIVATE KEY block"));
        assert_eq!(
            key(pkcs8_pem(0, OID_EC_PUBLIC_KEY, OID_P256, "EC PRIVATE KEY")),
            NodeConfigError::BadKubeletKey("not PKCS#8: give a `PRIVATE KEY` PEM block")
        );
        assert_eq!(
            key("-----BEGIN RSA PRIVATE KEY-----\nMIIBAQ==\n-----END RSA PRIVATE KEY-----\n".into()),
            NodeConfigError::BadKubeletKey("not PKCS#8: give a `PRIVATE KEY` PEM block")
        );
        // rsaEncryption (1.2.840.113549.1.1.1) and P-384 (1.3.132.0.34).
        let rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        assert_eq!(
            key(pkcs8_pem(0, &rsa, &[], "PRIVATE KEY")),
            NodeConfigError::BadKubeletKey("not an ECDSA key (the kubelet serves with an ECDSA P-256 key)")
        );
        assert_eq!(
            key(pkcs8_pem(0, OID_EC_PUBLIC_KEY, &[0x2b, 0x81, 0x04, 0x00, 0x22], "PRIVATE KEY")),
            NodeConfigError::BadKubeletKey("an ECDSA key on another curve than P-256")
        );
        assert_eq!(
            key(pkcs8_pem(5, OID_EC_PUBLIC_KEY, OID_P256, "PRIVATE KEY")),
            NodeConfigError::BadKubeletKey("not a PKCS#8 private key")
        );
        assert!(serving().check().is_ok());
        let mut v2 = serving();
        v2.kubelet_key = Some(pkcs8_pem(1, OID_EC_PUBLIC_KEY, OID_P256, "PRIVATE KEY"));
        assert!(v2.check().is_ok());
        assert_eq!(
            key(alloc::format!("{}{}", p256_key(), p256_key())),
            NodeConfigError::BadKubeletKey("more than one PRIVATE KEY block")
        );
        assert_eq!(
            key("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n".into()),
            NodeConfigError::BadKubeletKey("a key block is not base64")
        );
        assert_eq!(key("x".repeat(MAX_KUBELET_KEY + 1)), NodeConfigError::BadKubeletKey("larger than 8 KiB"));
        // Every cut of a good key's DER is refused without a panic.
        use base64::Engine as _;
        let pem = p256_key();
        let b64 = pem.lines().nth(1).unwrap();
        let full = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        for cut in 0..full.len() {
            assert!(check_p256_pkcs8(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(check_p256_pkcs8(&full).is_ok());
        assert!(check_p256_pkcs8(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_p256_pkcs8(&[0x30, 0x80]).is_err());
        for e in [
            NodeConfigError::BadNodeIp,
            NodeConfigError::BadKubeletPort,
            NodeConfigError::BadKubeletCertificate("x"),
            NodeConfigError::BadKubeletKey("x"),
            NodeConfigError::KubeletCertificateWithoutKey,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn the_largest_configuration_fits_in_a_module() {
        let big_pem = |max: usize| {
            let mut s = String::new();
            while s.len() + CA.len() <= max {
                s.push_str(CA);
            }
            s
        };
        let c = NodeBootConfig {
            certificate_authority: big_pem(MAX_CA),
            kubelet_certificate: Some(big_pem(MAX_KUBELET_CERTIFICATE)),
            token: "t".repeat(MAX_TOKEN),
            ..serving()
        };
        let c = NodeBootConfig {
            registries: Registries { certificate_authority: Some(big_pem(MAX_CA)), ..Default::default() },
            ..c
        };
        let m = c.to_module().unwrap();
        assert!(m.len() <= MAX_MODULE, "{}", m.len());
        assert_eq!(NodeBootConfig::from_module(&m).unwrap(), c);
    }

    #[test]
    fn registries() {
        let mut r = Registries { insecure: alloc::vec!["127.0.0.1:5000".into()], ..Default::default() };
        r.endpoints.insert("127.0.0.1:5000".into(), "10.0.2.100:5000".into());
        r.endpoints.insert("registry.example".into(), "mirror.example:443".into());
        let c = NodeBootConfig { registries: r.clone(), ..good() };
        let m = c.to_module().unwrap();
        assert_eq!(NodeBootConfig::from_module(&m).unwrap().registries, r);
        assert_eq!(r.endpoint("127.0.0.1:5000"), "10.0.2.100:5000");
        assert_eq!(r.endpoint("docker.io"), "docker.io");
        let bad = |f: &dyn Fn(&mut Registries)| {
            let mut r = r.clone();
            f(&mut r);
            match (NodeBootConfig { registries: r, ..good() }).check() {
                Err(NodeConfigError::BadRegistries(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(&|r| r.insecure.push("http://x".into())).contains("not a registry"));
        assert!(bad(&|r| r.insecure.push("a.example/path".into())).contains("not a registry"));
        assert!(bad(&|r| {
            r.endpoints.insert("a.example".into(), "10.0.2.100".into());
        })
        .contains("not HOST:PORT"));
        assert!(bad(&|r| {
            r.endpoints.insert("a.example".into(), "10.0.2.100:0".into());
        })
        .contains("not HOST:PORT"));
        assert!(bad(&|r| r.certificate_authority = Some("no pem".into())).contains("no PEM"));
        assert!(
            bad(&|r| r.insecure = alloc::vec!["a.example".into(); MAX_REGISTRIES + 1]).contains("at most")
        );
        let unknown = br#"CRXNODE1
{"nodeName":"n","server":"https://10.0.0.1","certificateAuthority":"x","token":"t","registries":{"mirrors":{}}}"#;
        assert!(matches!(NodeBootConfig::from_module(unknown), Err(NodeConfigError::Json(_))));
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
