//! `pods/log`: proxied to the node's kubelet endpoint,
//! `http://<address>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`.

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
    /// `host:port` of the kubelet.
    pub addr: String,
    /// The path and query on the kubelet.
    pub path: String,
}

impl LogSpec {
    /// Picks the node's address (Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP).
    pub fn new(req: &Request, node: &Value, ns: &str, pod: &str, container: &str) -> Result<Self, ApiError> {
        let addrs = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        let pick =
            ["Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP"].iter().find_map(|ty| {
                addrs
                    .iter()
                    .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
                    .and_then(|a| a.get("address")?.as_str())
            });
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .unwrap_or(10250);
        let Some(host) = pick else {
            return Err(ApiError::unavailable("the node has no address to reach its kubelet".into()));
        };
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
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(LogSpec { addr, path })
    }

    /// Fetches from the kubelet and streams its body to `w` as a chunked `text/plain` response.
    pub fn proxy(&self, w: &mut dyn Write) -> std::io::Result<Result<(), ApiError>> {
        let upstream = self.addr.to_socket_addrs().ok().and_then(|mut a| a.next());
        let conn = upstream.and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).ok());
        let Some(mut conn) = conn else {
            return Ok(Err(ApiError::unavailable(format!("the kubelet at {} cannot be reached", self.addr))));
        };
        write!(conn, "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.path, self.addr)?;
        let mut r = BufReader::new(conn);
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code: u16 = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(502);
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if h.to_ascii_lowercase().starts_with("transfer-encoding:")
                && h.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
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
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                write_chunk(w, buf.get(..n).unwrap_or_default())?;
            }
        }
        write_last_chunk(w)?;
        Ok(Ok(()))
    }
}
