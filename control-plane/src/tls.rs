//! The cluster CA and the serving certificate (ECDSA P-256), kept under `DIR/pki`.
//!
//! On first start a CA and a serving certificate for `localhost`, `127.0.0.1`, `::1` and the
//! listen address are generated; later starts reuse them so kubeconfigs stay valid.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Why the TLS set-up failed.
#[derive(Debug)]
pub enum TlsError {
    /// Reading or writing a PEM file.
    Io(io::Error),
    /// Generating a key or certificate.
    Generate(rcgen::Error),
    /// A PEM file under `DIR/pki` does not parse.
    Pem(String),
    /// rustls refused the certificate or key.
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "pki files: {e}"),
            TlsError::Generate(e) => write!(f, "generating certificates: {e}"),
            TlsError::Pem(what) => write!(f, "malformed PEM file {what}"),
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<io::Error> for TlsError {
    fn from(e: io::Error) -> Self {
        TlsError::Io(e)
    }
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Generate(e)
    }
}

/// The PEM texts a start needs.
pub struct Pki {
    /// The CA certificate (goes into kubeconfigs).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key.
    pub key_pem: String,
}

fn generate(hosts: &[String]) -> Result<Pki, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "control-plane-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Loads `DIR/pki`, generating it first when absent. `hosts` are extra names or addresses for
/// the serving certificate (used only when generating).
pub fn load_or_generate(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
    let pki = dir.join("pki");
    let (ca, crt, key) = (pki.join("ca.crt"), pki.join("apiserver.crt"), pki.join("apiserver.key"));
    if ca.exists() && crt.exists() && key.exists() {
        return Ok(Pki {
            ca_pem: fs::read_to_string(ca)?,
            cert_pem: fs::read_to_string(crt)?,
            key_pem: fs::read_to_string(key)?,
        });
    }
    fs::create_dir_all(&pki)?;
    let out = generate(hosts)?;
    fs::write(ca, &out.ca_pem)?;
    fs::write(crt, &out.cert_pem)?;
    write_private(&key, &out.key_pem)?;
    Ok(out)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// The rustls server configuration (TLS 1.2 and 1.3, ALPN `http/1.1` only).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem("apiserver.crt".into()))?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())
        .map_err(|_| TlsError::Pem("apiserver.key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_is_reused_and_accepted_by_rustls() {
        let dir = std::env::temp_dir().join(format!("cp-tls-{}", uuid::Uuid::new_v4()));
        let a = load_or_generate(&dir, &[]).unwrap();
        let b = load_or_generate(&dir, &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server_config(&a).is_ok());
        fs::write(dir.join("pki/apiserver.key"), "junk").unwrap();
        let c = load_or_generate(&dir, &[]).unwrap();
        assert!(matches!(server_config(&c), Err(TlsError::Pem(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
