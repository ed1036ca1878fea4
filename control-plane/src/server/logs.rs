//! `pods/log`: proxied to the node's kubelet endpoint,
//! `https://<address>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`
//! over TLS with the server's kubelet-client certificate (see [`crate::tls::kubelet_client_config`]),
//! trying the node's addresses in kube-apiserver's preference order until one connects. What
//! the kubelet answers is bounded like any peer's input: a head of at most 64 KiB, chunks of
//! at most 1 MiB.

use crate::api::status::ApiError;
use crate::server::http::{write_chunk, write_chunked_head, write_last_chunk, Request};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use wire::http::HeadLimits;

/// The largest chunk accepted from a kubelet.
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// The largest response head accepted from a kubelet.
const MAX_HEAD_BYTES: u64 = 64 * 1024;

/// The query parameters forwarded to the kubelet.
const FORWARDED: &[&str] =
    &["follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines", "limitBytes"];

/// Query parameter `name`'s value `v` as the kubelet is sent it: parsed as PodLogOptions
/// types it (booleans as Go's `strconv.ParseBool` reads them, integers, an RFC 3339 time) and
/// written back in canonical form, so that nothing but the option's value reaches the
/// kubelet. A value that does not parse is 400 BadRequest, one out of range 422 Invalid, as
/// kube-apiserver answers.
fn log_option(name: &str, v: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid value {v:?} for query parameter {name:?}"));
    match name {
        "follow" | "previous" | "timestamps" => match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true".into()),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false".into()),
            _ => Err(bad()),
        },
        "sinceSeconds" | "tailLines" | "limitBytes" => {
            let n: i64 = v.parse().map_err(|_| bad())?;
            let least = if name == "tailLines" { 0 } else { 1 };
            if n < least {
                let rule =
                    if least == 0 { "must be greater than or equal to 0" } else { "must be greater than 0" };
                return Err(invalid_option(name, &format!("{n}: {rule}")));
            }
            Ok(n.to_string())
        }
        "sinceTime" => {
            let (secs, _) = wire::time::parse(v).ok_or_else(bad)?;
            Ok(wire::time::format_time(secs))
        }
        _ => Err(bad()),
    }
}

/// 422 Invalid for PodLogOptions field `field`.
fn invalid_option(field: &str, rule: &str) -> ApiError {
    ApiError::invalid("PodLogOptions", "", &format!("{field}: Invalid value: {rule}"))
}

/// Where a log request goes.
#[derive(Debug, Clone)]
pub struct LogSpec {
    /// `host:port` candidates of the kubelet, in preference order.
    pub addrs: Vec<String>,
    /// The path and query on the kubelet.
    pub path: String,
}

impl LogSpec {
    /// Picks the node's address (Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP).
    pub fn new(req: &Request, node: &Value, ns: &str, pod: &str, container: &str) -> Result<Self, ApiError> {
        let addrs = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .unwrap_or(10250);
        let hosts: Vec<String> = ["Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP"]
            .iter()
            .flat_map(|ty| {
                addrs
                    .iter()
                    .filter(move |a| a.get("type").and_then(Value::as_str) == Some(ty))
                    .filter_map(|a| a.get("address")?.as_str())
            })
            .map(|h| if h.contains(':') { format!("[{h}]:{port}") } else { format!("{h}:{port}") })
            .collect();
        if hosts.is_empty() {
            return Err(ApiError::unavailable("the node has no address to reach its kubelet".into()));
        }
        let mut query: Vec<String> = Vec::new();
        for p in FORWARDED {
            if let Some(v) = req.param(p) {
                query.push(format!("{p}={}", wire::percent::encode(&log_option(p, v)?)));
            }
        }
        if req.param("sinceSeconds").is_some() && req.param("sinceTime").is_some() {
            let rule = "at most one of `sinceTime` or `sinceSeconds` may be specified";
            return Err(invalid_option("sinceSeconds", rule));
        }
        let [ns, pod, container] = [ns, pod, container].map(wire::percent::encode);
        let mut path = format!("/containerLogs/{ns}/{pod}/{container}");
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        Ok(LogSpec { addrs: hosts, path })
    }

    /// Fetches from the kubelet and streams its body to `w` as a chunked `text/plain` response.
    pub fn proxy(
        &self,
        w: &mut dyn Write,
        tls: &Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Result<(), ApiError>> {
        // The first address that resolves and accepts a connection wins.
        let conn = self.addrs.iter().find_map(|addr| {
            let sa = addr.to_socket_addrs().ok()?.next()?;
            TcpStream::connect_timeout(&sa, Duration::from_secs(3)).ok().map(|c| (c, addr))
        });
        let Some((tcp, addr)) = conn else {
            return Ok(Err(ApiError::unavailable(format!(
                "the kubelet cannot be reached at {}",
                self.addrs.join(", ")
            ))));
        };
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let session = match rustls::ClientConnection::new(tls.clone(), name) {
            Ok(s) => s,
            Err(e) => return Ok(Err(ApiError::internal(format!("TLS to the kubelet: {e}")))),
        };
        let mut conn = rustls::StreamOwned::new(session, tcp);
        // The handshake happens on this first write; a kubelet that refuses it is unreachable.
        if let Err(e) =
            write!(conn, "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", self.path)
        {
            return Ok(Err(ApiError::unavailable(format!("the kubelet at {addr}: {e}"))));
        }
        let mut r = BufReader::new(conn);
        // The head's lines, to the blank line that ends it, at most `MAX_HEAD_BYTES` in all.
        let mut raw = Vec::new();
        loop {
            let left = MAX_HEAD_BYTES.saturating_sub(raw.len() as u64);
            let start = raw.len();
            let n = (&mut r).take(left).read_until(b'\n', &mut raw)?;
            let line = raw.get(start..).unwrap_or_default();
            if n == 0 || line.iter().all(|b| *b == b'\r' || *b == b'\n') || raw.len() as u64 >= MAX_HEAD_BYTES
            {
                break;
            }
        }
        let limits = HeadLimits { max_bytes: MAX_HEAD_BYTES as usize, max_headers: usize::MAX };
        // A head that does not parse is a bad gateway's answer, told with its body as any other.
        let (code, chunked, length) = match wire::http::parse_response(&raw, limits) {
            Ok(Some((head, _))) => (
                head.status,
                wire::http::is_chunked(&head.headers),
                head.header("content-length").and_then(|v| v.parse::<u64>().ok()),
            ),
            _ => (502, false, None),
        };
        if code != 200 {
            let mut body = String::new();
            let _ = r.take(4096).read_to_string(&mut body);
            return Ok(Err(ApiError::bad_request(format!("the kubelet answered {code}: {}", body.trim()))));
        }
        write_chunked_head(w, 200, "text/plain")?;
        let mut buf = [0u8; 8192];
        if chunked {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size)? == 0 {
                    break;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
                if n == 0 || n > MAX_CHUNK_BYTES {
                    break;
                }
                let mut data = vec![0u8; n];
                r.read_exact(&mut data)?;
                write_chunk(w, &data)?;
                let mut crlf = String::new();
                r.read_line(&mut crlf)?;
            }
        } else {
            // With a Content-Length, exactly that many bytes; without, until the kubelet
            // closes. A kubelet that resets the connection after its body (it closed
            // without reading all of our request) ends the stream, not the response.
            let mut left = length.unwrap_or(u64::MAX);
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = match r.read(buf.get_mut(..want).unwrap_or_default()) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                left = left.saturating_sub(n as u64);
                write_chunk(w, buf.get(..n).unwrap_or_default())?;
            }
        }
        write_last_chunk(w)?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::TcpListener;

    /// A kubelet that serves one request over TLS and requires a client certificate from
    /// the cluster CA; returns the request line and the client's certificate subject check.
    fn kubelet(
        pki: &crate::tls::Pki,
        answer: &'static [u8],
    ) -> (u16, std::thread::JoinHandle<(String, bool)>) {
        kubelet_at(pki, answer, "127.0.0.1")
    }

    /// [`kubelet`] listening on `ip`.
    fn kubelet_at(
        pki: &crate::tls::Pki,
        answer: &'static [u8],
        ip: &str,
    ) -> (u16, std::thread::JoinHandle<(String, bool)>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp);
            let mut head = String::new();
            let mut r = BufReader::new(&mut s);
            if r.read_line(&mut head).is_err() {
                return (head, false);
            }
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let client_cert = s.conn.peer_certificates().is_some_and(|c| !c.is_empty());
            let _ = s.write_all(answer);
            s.conn.send_close_notify();
            let _ = s.flush();
            (head, client_cert)
        });
        (port, t)
    }

    #[test]
    fn log_requests_go_to_the_kubelet_over_tls_with_the_forwarded_query() {
        let dir = std::env::temp_dir().join(format!("cp-logs-{}", uuid::Uuid::new_v4()));
        let pki = crate::tls::load_or_generate(&dir, &[]).unwrap();
        let tls = crate::tls::kubelet_client_config(&pki, None).unwrap();
        let (port, server) = kubelet(&pki, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n");
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                     "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        let req = Request {
            query: crate::server::http::parse_query("tailLines=5&container=x&bogus=1"),
            ..Request::default()
        };
        let spec = LogSpec::new(&req, &node, "default", "p", "app").unwrap();
        assert_eq!(spec.path, "/containerLogs/default/p/app?tailLines=5");
        let mut out = Vec::new();
        assert!(spec.proxy(&mut out, &tls).unwrap().is_ok());
        let (head, client_cert) = server.join().unwrap();
        assert_eq!(head, "GET /containerLogs/default/p/app?tailLines=5 HTTP/1.1\r\n");
        assert!(client_cert, "the server showed no client certificate");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("6\r\nhello\n\r\n0\r\n\r\n"),
            "{text}"
        );
        assert!(LogSpec::new(&req, &json!({}), "default", "p", "app").is_err());
        // What a client sends reaches the kubelet only as an option's canonical value, and
        // names only percent-encoded: no CR/LF, no second request line, no extra query.
        for (query, want) in [
            ("follow=T&timestamps=0&sinceSeconds=30", "follow=true&timestamps=false&sinceSeconds=30"),
            (
                "sinceTime=2024-12-11T10:00:00.5Z&limitBytes=007",
                "sinceTime=2024-12-11T10%3A00%3A00Z&limitBytes=7",
            ),
        ] {
            let req = Request { query: crate::server::http::parse_query(query), ..Request::default() };
            let spec = LogSpec::new(&req, &node, "default", "p", "app").unwrap();
            assert_eq!(spec.path, format!("/containerLogs/default/p/app?{want}"));
        }
        for (query, code) in [
            ("tailLines=1%0D%0AX-Injected:%201", 400),
            ("follow=yes", 400),
            ("sinceTime=yesterday", 400),
            ("limitBytes=0", 422),
            ("tailLines=-1", 422),
            ("sinceSeconds=0", 422),
            ("sinceSeconds=5&sinceTime=2024-12-11T10:00:00Z", 422),
        ] {
            let req = Request { query: crate::server::http::parse_query(query), ..Request::default() };
            let e = LogSpec::new(&req, &node, "default", "p", "app").unwrap_err();
            assert_eq!(e.code, code, "{query}: {e:?}");
        }
        let spec = LogSpec::new(&Request::default(), &node, "default", "p", "a\r\nHost: x/../b?c").unwrap();
        assert_eq!(spec.path, "/containerLogs/default/p/a%0D%0AHost%3A%20x%2F..%2Fb%3Fc");
        // A hostile kubelet's huge chunk ends the stream instead of allocating it.
        let (port, server) =
            kubelet(&pki, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nffffffffff\r\n");
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                     "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        let spec = LogSpec::new(&req, &node, "default", "p", "app").unwrap();
        let mut out = Vec::new();
        assert!(spec.proxy(&mut out, &tls).unwrap().is_ok());
        let _ = server.join();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("3\r\nabc\r\n0\r\n\r\n"), "{text}");
        // Nobody listening: 503 with the addresses tried.
        let closed = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}});
        let spec = LogSpec::new(&req, &closed, "default", "p", "app").unwrap();
        let e = spec.proxy(&mut Vec::new(), &tls).unwrap().unwrap_err();
        assert_eq!(e.code, 503, "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With `--kubelet-certificate-authority`, only a kubelet whose serving certificate chains
    /// to that CA and names the address dialled gets the request (and so the kubelet-client
    /// certificate's handshake); another server at a node's daemonEndpoints gets nothing.
    #[test]
    fn a_kubelet_certificate_authority_is_enforced() {
        let dir = std::env::temp_dir().join(format!("cp-logs-ca-{}", uuid::Uuid::new_v4()));
        let other_dir = std::env::temp_dir().join(format!("cp-logs-ca2-{}", uuid::Uuid::new_v4()));
        let pki = crate::tls::load_or_generate(&dir, &[]).unwrap();
        let other = crate::tls::load_or_generate(&other_dir, &[]).unwrap();
        let node = |port: u16, addr: &str| {
            json!({"status": {"addresses": [{"type": "InternalIP", "address": addr}],
                              "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
        };
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        // The kubelet's certificate is from the CA the server trusts: the request goes through.
        let tls = crate::tls::kubelet_client_config(&pki, Some(&pki.ca_pem)).unwrap();
        let (port, server) = kubelet(&pki, ok);
        let spec =
            LogSpec::new(&Request::default(), &node(port, "127.0.0.1"), "default", "p", "app").unwrap();
        let mut out = Vec::new();
        assert!(spec.proxy(&mut out, &tls).unwrap().is_ok());
        assert!(server.join().unwrap().0.starts_with("GET /containerLogs/"));
        assert!(String::from_utf8_lossy(&out).contains("ok\n"));
        // A server whose certificate is from another CA: refused before any request.
        let (port, server) = kubelet(&other, ok);
        let spec =
            LogSpec::new(&Request::default(), &node(port, "127.0.0.1"), "default", "p", "app").unwrap();
        let e = spec.proxy(&mut Vec::new(), &tls).unwrap().unwrap_err();
        assert_eq!(e.code, 503, "{e:?}");
        let (head, _) = server.join().unwrap();
        assert!(head.is_empty(), "the impostor received {head:?}");
        // The right CA but a name the certificate lacks (the node lies about its address).
        let (port, server) = kubelet_at(&pki, ok, "127.0.0.2");
        let spec =
            LogSpec::new(&Request::default(), &node(port, "127.0.0.2"), "default", "p", "app").unwrap();
        let e = spec.proxy(&mut Vec::new(), &tls).unwrap().unwrap_err();
        assert_eq!(e.code, 503, "{e:?}");
        assert!(e.message.contains("certificate"), "{e:?}");
        let (head, _) = server.join().unwrap();
        assert!(head.is_empty(), "the wrongly named kubelet received {head:?}");
        // A bundle with no certificate is refused at start.
        assert!(crate::tls::kubelet_client_config(&pki, Some("junk")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other_dir);
    }
}
