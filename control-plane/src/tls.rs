//! The cluster CA, the serving certificate and the client certificate for kubelets (ECDSA
//! P-256), kept under `DIR/pki`.
//!
//! On first start a CA, a serving certificate for `localhost`, `127.0.0.1`, `::1` and the
//! listen address, and `apiserver-kubelet-client` (CN `kube-apiserver-kubelet-client`, O
//! `system:masters`, client auth: what the server shows a kubelet when it fetches logs) are
//! generated; later starts reuse them so kubeconfigs stay valid. A directory missing any of
//! them gets a new set (the kubeconfigs are rewritten at every start).

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
    /// The client certificate for kubelets.
    pub kubelet_client_cert_pem: String,
    /// Its key.
    pub kubelet_client_key_pem: String,
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
    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name.push(DnType::CommonName, "kube-apiserver-kubelet-client");
    client.distinguished_name.push(DnType::OrganizationName, "system:masters");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        kubelet_client_cert_pem: client_cert.pem(),
        kubelet_client_key_pem: client_key.serialize_pem(),
    })
}

/// Loads `DIR/pki`, generating it first when absent. `hosts` are extra names or addresses for
/// the serving certificate (used only when generating).
pub fn load_or_generate(dir: &Path, hosts: &[String]) -> Result<Pki, TlsError> {
    let pki = dir.join("pki");
    let files = [
        pki.join("ca.crt"),
        pki.join("apiserver.crt"),
        pki.join("apiserver.key"),
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    ];
    if files.iter().all(|f| f.exists()) {
        let [ca, crt, key, kcrt, kkey] = files.each_ref().map(fs::read_to_string);
        return Ok(Pki {
            ca_pem: ca?,
            cert_pem: crt?,
            key_pem: key?,
            kubelet_client_cert_pem: kcrt?,
            kubelet_client_key_pem: kkey?,
        });
    }
    fs::create_dir_all(&pki)?;
    let out = generate(hosts)?;
    fs::write(&files[0], &out.ca_pem)?;
    fs::write(&files[1], &out.cert_pem)?;
    write_private(&files[2], &out.key_pem)?;
    fs::write(&files[3], &out.kubelet_client_cert_pem)?;
    write_private(&files[4], &out.kubelet_client_key_pem)?;
    Ok(out)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // The mode given at open only applies to a new file: an older one is made private too.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// How the server reaches kubelets (for `pods/log`): TLS, showing the kubelet-client
/// certificate. With `kubelet_ca` (the PEM of `--kubelet-certificate-authority`), the
/// kubelet's serving certificate must chain to it and name the address dialled, as
/// kube-apiserver checks it; without, like kube-apiserver without the flag, any certificate
/// is taken (kubelets serve self-signed ones), but the handshake signatures are still
/// verified.
pub fn kubelet_client_config(
    pki: &Pki,
    kubelet_ca: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.kubelet_client_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Pem("apiserver-kubelet-client.crt".into()))?;
    let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client_key_pem.as_bytes())
        .map_err(|_| TlsError::Pem("apiserver-kubelet-client.key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match kubelet_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|_| TlsError::Pem("the kubelet certificate authority".into()))?;
                roots.add(c).map_err(TlsError::Config)?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem("the kubelet certificate authority (no certificate in it)".into()));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Pem(format!("the kubelet certificate authority: {e}")))?
        }
        None => Arc::new(AnyKubeletCertificate(provider.clone())),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(cfg))
}

/// Accepts whatever certificate a kubelet serves, checking only the handshake signatures.
#[derive(Debug)]
struct AnyKubeletCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyKubeletCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
