//! A [`Transport`] over TCP, with TLS (rustls, the kubeconfig's CA) for `https` servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use kubelet_lite::http::{HttpError, Transport};
use rustls::pki_types::ServerName;

/// Where the API server is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// Parses `https://HOST:PORT` or `http://HOST:PORT` (a path, if any, is ignored).
    pub fn parse(server: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Endpoint, String> {
        let (secure, rest) = if let Some(r) = server.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = server.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("server {server:?} is not an http(s) URL"));
        };
        let hostport = rest.split('/').next().unwrap_or("");
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_string(), p.parse().map_err(|_| format!("bad port in {server:?}"))?)
            }
            _ => (hostport.to_string(), if secure { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("no host in {server:?}"));
        }
        if secure && tls.is_none() {
            return Err("https server without a TLS configuration".into());
        }
        Ok(Endpoint {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            tls: if secure { tls } else { None },
        })
    }

    /// `host:port` for the Host header.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// One connection at a time to the endpoint.
pub struct NetTransport {
    ep: Endpoint,
    conn: Option<Conn>,
    read_timeout: Option<Duration>,
}

impl NetTransport {
    /// A transport whose reads time out after `read_timeout` (None: never, for watches).
    pub fn new(ep: Endpoint, read_timeout: Option<Duration>) -> Self {
        NetTransport { ep, conn: None, read_timeout }
    }
}

fn terr(e: impl std::fmt::Display) -> HttpError {
    HttpError::Transport(e.to_string())
}

impl Transport for NetTransport {
    fn connect(&mut self) -> Result<(), HttpError> {
        self.conn = None;
        let tcp = TcpStream::connect((self.ep.host.as_str(), self.ep.port)).map_err(terr)?;
        tcp.set_read_timeout(self.read_timeout).map_err(terr)?;
        tcp.set_write_timeout(Some(Duration::from_secs(30))).map_err(terr)?;
        tcp.set_nodelay(true).map_err(terr)?;
        self.conn = Some(match &self.ep.tls {
            None => Conn::Plain(tcp),
            Some(cfg) => {
                let name = ServerName::try_from(self.ep.host.clone()).map_err(terr)?;
                let c = rustls::ClientConnection::new(cfg.clone(), name).map_err(terr)?;
                Conn::Tls(Box::new(rustls::StreamOwned::new(c, tcp)))
            }
        });
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError> {
        match self.conn.as_mut() {
            Some(Conn::Plain(s)) => s.write_all(buf).and_then(|_| s.flush()).map_err(terr),
            Some(Conn::Tls(s)) => s.write_all(buf).and_then(|_| s.flush()).map_err(terr),
            None => Err(HttpError::Transport("not connected".into())),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let r = match self.conn.as_mut() {
            Some(Conn::Plain(s)) => s.read(buf),
            Some(Conn::Tls(s)) => s.read(buf),
            None => return Err(HttpError::Transport("not connected".into())),
        };
        match r {
            Ok(n) => Ok(n),
            // A server that closes without close_notify ends the body all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(terr(e)),
        }
    }
}

/// A rustls client configuration trusting the PEM CA bundle.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(ca_pem);
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| format!("bad CA PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080", None).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls.is_none()), ("127.0.0.1", 8080, true));
        assert!(Endpoint::parse("https://127.0.0.1:6443", None).is_err(), "https needs a CA");
        assert!(Endpoint::parse("ftp://x", None).is_err());
        assert!(Endpoint::parse("http://:80", None).is_err());
        assert_eq!(Endpoint::parse("http://localhost", None).unwrap().port, 80);
    }
}
