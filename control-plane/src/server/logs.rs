//! `pods/log`: proxied to the node's kubelet endpoint,
//! `http://<address>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`
//! (plain HTTP, as kubelet-lite's host program serves it), trying the node's addresses in
//! kube-apiserver's preference order until one connects.

use crate::api::status::ApiError;
use crate::server::http::{write_chunk, write_chunked_head, write_last_chunk, Request};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The query parameters forwarded to the kubelet.
const FORWARDED: &[&str] =
    &["follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines", "limitBytes"];

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
                query.push(format!("{p}={v}"));
            }
        }
        let mut path = format!("/containerLogs/{ns}/{pod}/{container}");
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        Ok(LogSpec { addrs: hosts, path })
    }

    /// Fetches from the kubelet and streams its body to `w` as a chunked `text/plain` response.
    pub fn proxy(&self, w: &mut dyn Write) -> std::io::Result<Result<(), ApiError>> {
        // The first address that resolves and accepts a connection wins.
        let conn = self.addrs.iter().find_map(|addr| {
            let sa = addr.to_socket_addrs().ok()?.next()?;
            TcpStream::connect_timeout(&sa, Duration::from_secs(3)).ok().map(|c| (c, addr))
        });
        let Some((mut conn, addr)) = conn else {
            return Ok(Err(ApiError::unavailable(format!(
                "the kubelet cannot be reached at {}",
                self.addrs.join(", ")
            ))));
        };
        write!(conn, "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", self.path)?;
        let mut r = BufReader::new(conn);
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code: u16 = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(502);
        let mut chunked = false;
        let mut length: Option<u64> = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            }
        }
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
                if n == 0 {
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

    #[test]
    fn log_requests_go_to_the_kubelet_with_the_forwarded_query() {
        let kubelet = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = kubelet.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = kubelet.accept().unwrap();
            let mut head = String::new();
            BufReader::new(c.try_clone().unwrap()).read_line(&mut head).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n").unwrap();
            head
        });
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                     "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        let req = Request {
            query: crate::server::http::parse_query("tailLines=5&container=x&bogus=1"),
            ..Request::default()
        };
        let spec = LogSpec::new(&req, &node, "default", "p", "app").unwrap();
        assert_eq!(spec.path, "/containerLogs/default/p/app?tailLines=5");
        let mut out = Vec::new();
        assert!(spec.proxy(&mut out).unwrap().is_ok());
        assert_eq!(server.join().unwrap(), "GET /containerLogs/default/p/app?tailLines=5 HTTP/1.1\r\n");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("6\r\nhello\n\r\n0\r\n\r\n"),
            "{text}"
        );
        assert!(LogSpec::new(&req, &json!({}), "default", "p", "app").is_err());
    }
}
