//! A small HTTP/1.1 server side: request parsing (Content-Length and chunked bodies, a body
//! limit), responses with a length, and chunked streaming responses.
//!
//! Everything here comes from the network: malformed input gives a `HttpError`, never a panic.
//! What a request may hold is bounded before it is kept: a head of at most
//! [`MAX_HEAD_BYTES`] (1 MiB, Go's `DefaultMaxHeaderBytes`, which kube-apiserver keeps; more is
//! 431), a body of at most [`MAX_BODY_BYTES`] (more is 413, told by its `Content-Length` before
//! any of it is read), and buffers that grow only as bytes arrive. The head and the body's
//! framing are read as RFC 9112 says (see `wire::http`): 400 for malformed framing, 501 for a
//! transfer coding other than `chunked`, 505 for a version other than HTTP/1.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use wire::http::{BodyFraming, HeadLimits};

/// The largest request body accepted (3 MiB, as kube-apiserver).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// The largest request head, without the empty line that ends it (1 MiB, as Go's net/http
/// and so kube-apiserver).
pub const MAX_HEAD_BYTES: usize = 1 << 20;
/// The most header fields in a head (more is 431).
const MAX_HEADERS: usize = 256;
/// The most bytes of trailer fields after a chunked body.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

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
    /// The socket failed, or the peer closed it in the middle of a request.
    Io(io::Error),
    /// The socket's read deadline passed (see `server::Timed`).
    TimedOut,
    /// The request is malformed: the status to answer (400, 431, 501 or 505) and why.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        what: String,
    },
    /// The body is larger than `MAX_BODY_BYTES`; `unread` bytes of it are still on the wire
    /// (`None` for a chunked body).
    TooLarge {
        /// Bytes of the body not read yet.
        unread: Option<u64>,
    },
}

impl HttpError {
    fn rejected(status: u16, what: impl fmt::Display) -> Self {
        HttpError::Rejected { status, what: what.to_string() }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Closed => write!(f, "connection closed"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::TimedOut => write!(f, "timed out"),
            HttpError::Rejected { what, .. } => write!(f, "malformed request: {what}"),
            HttpError::TooLarge { .. } => write!(f, "request entity too large: limit is {MAX_BODY_BYTES}"),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::TimedOut,
            _ => HttpError::Io(e),
        }
    }
}

impl From<wire::http::FramingError> for HttpError {
    fn from(e: wire::http::FramingError) -> Self {
        HttpError::rejected(e.status(), e)
    }
}

fn truncated() -> HttpError {
    HttpError::Io(io::ErrorKind::UnexpectedEof.into())
}

/// The bytes of a request head, up to and with the empty line that ends it, read into a buffer
/// that grows as they come, at most [`MAX_HEAD_BYTES`] of them. Empty lines before the request
/// line count. `Closed` when the input ends before a request starts.
fn read_head(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::new();
    let mut started = false;
    loop {
        // The empty line that ends the head is not counted, as Go's net/http does not.
        let room = (MAX_HEAD_BYTES + 2).saturating_sub(head.len());
        let at = head.len();
        let n = r.by_ref().take(room as u64).read_until(b'\n', &mut head)?;
        if n == 0 && head.is_empty() {
            return Err(HttpError::Closed);
        }
        if n == 0 {
            return Err(truncated());
        }
        if !head.ends_with(b"\n") {
            return Err(HttpError::rejected(431, "request head too large"));
        }
        let blank = matches!(&head[at..], b"\r\n" | b"\n");
        if blank && started {
            return Ok(head);
        }
        started |= !blank;
    }
}

/// Reads `n` bytes onto `body`, growing it as they arrive.
fn read_growing(r: &mut impl Read, body: &mut Vec<u8>, n: u64) -> Result<(), HttpError> {
    let mut left = n;
    let mut buf = [0u8; 16 * 1024];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(truncated());
        }
        body.extend_from_slice(&buf[..got]);
        left -= got as u64;
    }
    Ok(())
}

/// A line of the chunked coding without its CRLF, which it must end with; at most
/// `wire::http::MAX_CHUNK_LINE` bytes.
fn read_chunk_line(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut line = Vec::new();
    let max = wire::http::MAX_CHUNK_LINE as u64 + 2;
    let n = r.by_ref().take(max).read_until(b'\n', &mut line)?;
    if n == 0 || (!line.ends_with(b"\n") && (n as u64) < max) {
        return Err(truncated());
    }
    match line.strip_suffix(b"\r\n") {
        Some(text) => Ok(text.to_vec()),
        None => Err(wire::http::FramingError::Chunk.into()),
    }
}

/// Reads one request's head, and how its body is framed (the body is left for
/// [`read_body`]). Returns `Closed` when the peer closed cleanly between requests.
pub fn read_request_head(r: &mut impl BufRead) -> Result<(Request, BodyFraming), HttpError> {
    let raw = read_head(r)?;
    let limits = HeadLimits { max_bytes: MAX_HEAD_BYTES, max_headers: MAX_HEADERS };
    let head = match wire::http::parse_request(&raw, limits) {
        Ok(Some((head, _))) => head,
        // `read_head` ends at an empty line, so the head is complete.
        Ok(None) => return Err(HttpError::rejected(400, "headers truncated")),
        Err(e) => return Err(HttpError::rejected(e.status(), e)),
    };
    let framing = wire::http::request_framing(&head.headers)?;
    if let BodyFraming::Length(n) = framing {
        if n > MAX_BODY_BYTES as u64 {
            return Err(HttpError::TooLarge { unread: Some(n) });
        }
    }
    let wire::http::RequestHead { method, target, headers } = head;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let req = Request {
        method,
        path: wire::percent::decode(path, false),
        query: parse_query(query),
        headers,
        body: Vec::new(),
    };
    Ok((req, framing))
}

/// Reads a body framed as `framing` says onto `body`, at most [`MAX_BODY_BYTES`].
pub fn read_body(r: &mut impl BufRead, framing: BodyFraming, body: &mut Vec<u8>) -> Result<(), HttpError> {
    match framing {
        BodyFraming::Empty => Ok(()),
        BodyFraming::Length(n) => read_growing(r, body, n),
        BodyFraming::Chunked => loop {
            let size = wire::http::parse_chunk_size(&read_chunk_line(r)?)?;
            if size == 0 {
                let mut trailers = 0;
                loop {
                    let line = read_chunk_line(r)?;
                    if line.is_empty() {
                        return Ok(());
                    }
                    trailers += line.len();
                    if trailers > MAX_TRAILER_BYTES {
                        return Err(HttpError::rejected(431, "trailer fields too large"));
                    }
                    if !wire::http::is_field_line(&line) {
                        return Err(wire::http::FramingError::Chunk.into());
                    }
                }
            }
            // `size` is the peer's number: compare without adding, which could overflow.
            if size > MAX_BODY_BYTES.saturating_sub(body.len()) as u64 {
                return Err(HttpError::TooLarge { unread: None });
            }
            read_growing(r, body, size)?;
            let mut end = [0u8; 2];
            r.read_exact(&mut end).map_err(|_| truncated())?;
            if &end != b"\r\n" {
                return Err(wire::http::FramingError::Chunk.into());
            }
        },
    }
}

/// Reads one request, head and body.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, HttpError> {
    let (mut req, framing) = read_request_head(r)?;
    read_body(r, framing, &mut req.body)?;
    Ok(req)
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
        let status = |raw: &[u8]| match read_request(&mut BufReader::new(raw)) {
            Err(HttpError::Rejected { status, .. }) => status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        };
        assert_eq!(status(b"GARBAGE\r\n\r\n"), 400);
        assert!(matches!(read_request(&mut BufReader::new(&b""[..])), Err(HttpError::Closed)));
        assert_eq!(status(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        // A chunk size near usize::MAX after a first chunk: too large, not an overflow.
        let huge =
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nffffffffffffffff\r\nx\r\n";
        assert!(matches!(
            read_request(&mut BufReader::new(&huge[..])),
            Err(HttpError::TooLarge { unread: None })
        ));
    }

    /// A reader that says how much of its input was asked for and how big the body's buffer
    /// got: a `Content-Length` reserves nothing before the bytes come.
    #[test]
    fn bodies_grow_as_they_arrive() {
        let head = format!("PUT / HTTP/1.1\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n");
        let mut input = head.into_bytes();
        input.extend_from_slice(b"only this much");
        let mut r = BufReader::new(&input[..]);
        let (_, framing) = read_request_head(&mut r).unwrap();
        assert_eq!(framing, BodyFraming::Length(MAX_BODY_BYTES as u64));
        let mut body = Vec::new();
        assert!(matches!(read_body(&mut r, framing, &mut body), Err(HttpError::Io(_))));
        assert_eq!(body, b"only this much");
        assert!(body.capacity() < 64 * 1024, "{}", body.capacity());
        // Over the limit: refused by the head alone.
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
        assert!(matches!(
            read_request_head(&mut BufReader::new(big.as_bytes())),
            Err(HttpError::TooLarge { unread: Some(n) }) if n == MAX_BODY_BYTES as u64 + 1
        ));
    }

    #[test]
    fn rfc_9112_framing_and_heads() {
        let status = |raw: &[u8]| match read_request(&mut BufReader::new(raw)) {
            Ok(req) => (200, req.body),
            Err(HttpError::Rejected { status, .. }) => (status, Vec::new()),
            Err(HttpError::TooLarge { .. }) => (413, Vec::new()),
            Err(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(raw)),
        };
        let code = |raw: &[u8]| status(raw).0;
        let p = "POST / HTTP/1.1\r\nHost: a\r\n";
        let req = |rest: &str| format!("{p}{rest}").into_bytes();
        assert_eq!(code(&req("Content-Length: 1\r\nContent-Length: 2\r\n\r\nab")), 400);
        assert_eq!(code(&req("Content-Length: 1, 2\r\n\r\nab")), 400);
        assert_eq!(code(&req("Content-Length: +2\r\n\r\nab")), 400);
        assert_eq!(status(&req("Content-Length: 2\r\nContent-Length: 2\r\n\r\nab")), (200, b"ab".to_vec()));
        assert_eq!(
            code(&req("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")),
            400
        );
        for te in ["notchunked", "gzip, chunked", "chunked, chunked"] {
            assert_eq!(code(&req(&format!("Transfer-Encoding: {te}\r\n\r\n0\r\n\r\n"))), 501, "{te}");
        }
        let chunked = |body: &str| req(&format!("Transfer-Encoding: Chunked\r\n\r\n{body}"));
        assert_eq!(status(&chunked("2;x=\"y\"\r\nab\r\n0\r\nA: b\r\n\r\n")), (200, b"ab".to_vec()));
        for bad in [
            "+2\r\nab\r\n0\r\n\r\n",
            "0x2\r\nab\r\n0\r\n\r\n",
            " 2\r\nab\r\n0\r\n\r\n",
            "2\nab\r\n0\r\n\r\n",
            "2\r\nab\n0\r\n\r\n",
            "2\r\nabc\r\n0\r\n\r\n",
            "2\r\nab\r\n0\r\n\n",
            "2\r\nab\r\n0\r\n bad\r\n\r\n",
            "2;\r\nab\r\n0\r\n\r\n",
        ] {
            assert_eq!(code(&chunked(bad)), 400, "{bad:?}");
        }
        assert_eq!(code(b"GET / HTTP/1.7\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(code(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(code(b"GET / HTTP/1.1\nHost: a\n\n"), 400);
        assert_eq!(code(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(code(b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"), 400);
        // A header line of 64 KiB is taken (the head's limit is 1 MiB, as Go's); past 1 MiB, 431.
        let line = |n: usize| format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(n)).into_bytes();
        assert_eq!(code(&line(65 * 1024)), 200);
        assert_eq!(code(&line(MAX_HEAD_BYTES)), 431);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: a\r\n")).collect();
        assert_eq!(code(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), 431);
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
