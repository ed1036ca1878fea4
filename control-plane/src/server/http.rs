//! A small HTTP/1.1 server side: request parsing (Content-Length and chunked bodies, a body
//! limit), responses with a length, and chunked streaming responses.
//!
//! Everything here comes from the network: malformed input gives a `HttpError`, never a panic.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use wire::http::{HeadError, HeadLimits};

/// The largest request body accepted (3 MiB, as kube-apiserver).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
const MAX_HEADER_LINE: usize = 64 * 1024;
const MAX_HEADERS: usize = 200;

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The method (`GET`, ...).
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// The query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        !self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Why reading a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// The peer closed the connection before a request started.
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The request line or a header is malformed.
    Malformed(&'static str),
    /// The body is larger than `MAX_BODY_BYTES`; `unread` bytes of it are still on the wire
    /// (`None` for a chunked body).
    TooLarge {
        /// Bytes of the body not read yet.
        unread: Option<u64>,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Closed => write!(f, "connection closed"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Malformed(what) => write!(f, "malformed request: {what}"),
            HttpError::TooLarge { .. } => write!(f, "request entity too large: limit is {MAX_BODY_BYTES}"),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

/// One line with its line break, at most `MAX_HEADER_LINE` bytes; `None` at the end of input.
fn read_line(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, HttpError> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(HttpError::Malformed("line too long or truncated"));
    }
    Ok(Some(buf))
}

/// A line of the chunked framing, without its line break.
fn read_text_line(r: &mut impl BufRead) -> Result<Option<String>, HttpError> {
    let Some(mut buf) = read_line(r)? else { return Ok(None) };
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map(Some).map_err(|_| HttpError::Malformed("non-UTF-8 header"))
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| *b == b'\n' || *b == b'\r')
}

/// The bytes of a request head, up to and with the blank line that ends it. Blank lines before
/// the request line are skipped; `Closed` when the input ends before a request starts.
fn read_head(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut head = loop {
        match read_line(r)? {
            None => return Err(HttpError::Closed),
            Some(l) if is_blank(&l) => continue,
            Some(l) => break l,
        }
    };
    let mut headers = 0;
    loop {
        let Some(line) = read_line(r)? else { return Err(HttpError::Malformed("headers truncated")) };
        head.extend_from_slice(&line);
        if is_blank(&line) {
            return Ok(head);
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers"));
        }
    }
}

/// Splits a query string into decoded pairs.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (wire::percent::decode(k, true), wire::percent::decode(v, true)),
            None => (wire::percent::decode(p, true), String::new()),
        })
        .collect()
}

/// Reads one request. Returns `Closed` when the peer closed cleanly between requests.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, HttpError> {
    let raw = read_head(r)?;
    let limits = HeadLimits { max_bytes: usize::MAX, max_headers: MAX_HEADERS };
    let head = match wire::http::parse_request(&raw, limits) {
        Ok(Some((head, _))) => head,
        // `read_head` ends at a blank line, so the head is complete.
        Ok(None) => return Err(HttpError::Malformed("headers truncated")),
        Err(HeadError::Version) => return Err(HttpError::Malformed("HTTP version")),
        Err(HeadError::StartLine) => return Err(HttpError::Malformed("request line")),
        Err(HeadError::Header) => return Err(HttpError::Malformed("header line")),
        Err(HeadError::TooManyHeaders) => return Err(HttpError::Malformed("too many headers")),
        Err(HeadError::TooLarge) => return Err(HttpError::Malformed("line too long or truncated")),
    };
    let wire::http::RequestHead { method, target, headers } = head;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut req = Request {
        method,
        path: wire::percent::decode(path, false),
        query: parse_query(query),
        headers,
        ..Request::default()
    };
    if wire::http::is_chunked(&req.headers) {
        loop {
            let Some(size_line) = read_text_line(r)? else {
                return Err(HttpError::Malformed("chunk truncated"));
            };
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| HttpError::Malformed("chunk size"))?;
            if size == 0 {
                // Trailers end with an empty line.
                while read_text_line(r)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            // `size` is the peer's number: compare without adding, which could overflow.
            if size > MAX_BODY_BYTES.saturating_sub(req.body.len()) {
                return Err(HttpError::TooLarge { unread: None });
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])?;
            let _ = read_text_line(r)?;
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| HttpError::Malformed("content-length"))?;
        if len > MAX_BODY_BYTES {
            return Err(HttpError::TooLarge { unread: Some(len as u64) });
        }
        req.body.resize(len, 0);
        r.read_exact(&mut req.body)?;
    }
    Ok(req)
}

/// One complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The content type.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// `Warning` headers (RFC 7234 code 299), e.g. for unknown fields dropped under
    /// `fieldValidation=Warn`.
    pub warnings: Vec<String>,
}

impl Response {
    /// The response with `warnings` added.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json".into(),
            body: v.to_string().into_bytes(),
            warnings: Vec::new(),
        }
    }
}

pub use wire::http::reason;

/// Writes a response with a Content-Length.
pub fn write_response(w: &mut (impl Write + ?Sized), resp: &Response, keep_alive: bool) -> io::Result<()> {
    let warnings: String = resp.warnings.iter().map(|t| format!("Warning: 299 - {}\r\n", quote(t))).collect();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n{warnings}{}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

/// A quoted string as in a `Warning` header (Go's `strconv.Quote`): `"` and `\\` escaped,
/// control characters and non-ASCII as escapes, so a header never breaks.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Starts a chunked response.
pub fn write_chunked_head(w: &mut (impl Write + ?Sized), status: u16, content_type: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n",
        reason(status)
    );
    w.write_all(head.as_bytes())?;
    w.flush()
}

/// Writes and flushes one chunk (nothing for an empty slice).
pub fn write_chunk(w: &mut (impl Write + ?Sized), data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// Ends a chunked response.
pub fn write_last_chunk(w: &mut (impl Write + ?Sized)) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn parses_request_with_query_and_body() {
        let raw = b"POST /api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dp&x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        let req = read_request(&mut BufReader::new(&raw[..])).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/api/v1/namespaces/default/pods");
        assert_eq!(req.param("fieldSelector"), Some("metadata.name=p"));
        assert_eq!(req.param("x"), Some(""));
        assert_eq!(req.header("host"), Some("a"));
        assert_eq!(req.body, b"{}");
    }

    #[test]
    fn chunked_bodies_and_limits() {
        let raw = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(read_request(&mut BufReader::new(&raw[..])).unwrap().body, b"abcde");
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
        assert!(matches!(
            read_request(&mut BufReader::new(big.as_bytes())),
            Err(HttpError::TooLarge { unread: Some(_) })
        ));
        assert!(matches!(
            read_request(&mut BufReader::new(&b"GARBAGE\r\n\r\n"[..])),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(read_request(&mut BufReader::new(&b""[..])), Err(HttpError::Closed)));
        let bad_len = b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        assert!(matches!(read_request(&mut BufReader::new(&bad_len[..])), Err(HttpError::Malformed(_))));
        // A chunk size near usize::MAX after a first chunk: too large, not an overflow.
        let huge =
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nffffffffffffffff\r\nx\r\n";
        assert!(matches!(
            read_request(&mut BufReader::new(&huge[..])),
            Err(HttpError::TooLarge { unread: None })
        ));
    }

    #[test]
    fn warnings_are_quoted_headers() {
        assert_eq!(quote("unknown field \"spec.foo\""), r#""unknown field \"spec.foo\"""#);
        assert_eq!(quote("a\r\nb\\é"), r#""a\u000d\u000ab\\\u00e9""#);
        let resp =
            Response::json(201, &serde_json::json!({})).with_warnings(vec!["unknown field \"x\"".into()]);
        let mut out = Vec::new();
        write_response(&mut out, &resp, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nWarning: 299 - \"unknown field \\\"x\\\"\"\r\n"), "{text}");
    }
}
