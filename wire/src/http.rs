//! HTTP/1.x message heads (request line or status line, then headers), parsed with `httparse`.
//!
//! The parsers take the bytes received so far and say whether the head is complete; they bound
//! the head's size and its number of headers, and turn every malformed head into a
//! [`HeadError`], never a panic. Bodies and their framing stay with the callers.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Bounds on one head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// The most bytes of start line and headers, not counting the blank line that ends them.
    pub max_bytes: usize,
    /// The most header fields.
    pub max_headers: usize,
}

impl HeadLimits {
    /// No bound: for callers that bound what they read themselves.
    pub const UNBOUNDED: HeadLimits = HeadLimits { max_bytes: usize::MAX, max_headers: usize::MAX };
}

/// Why a head was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The version is not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// The request line or status line is malformed (method, target or status code).
    StartLine,
    /// A header field is malformed, or its name or value is not UTF-8.
    Header,
    /// More header fields than [`HeadLimits::max_headers`].
    TooManyHeaders,
    /// The head is longer than [`HeadLimits::max_bytes`].
    TooLarge,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::Version => "malformed HTTP version",
            HeadError::StartLine => "malformed request or status line",
            HeadError::Header => "malformed header",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::TooLarge => "head too large",
        })
    }
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::Version => HeadError::Version,
            httparse::Error::Token | httparse::Error::Status => HeadError::StartLine,
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine => {
                HeadError::Header
            }
        }
    }
}

/// Header fields: names in lower case, values trimmed, in order.
pub type Headers = Vec<(String, String)>;

/// The first value of the header `name` (lower case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Whether `Transfer-Encoding` names `chunked`.
pub fn is_chunked(headers: &[(String, String)]) -> bool {
    header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// A request line and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// The method (`GET`, ...).
    pub method: String,
    /// The request target as sent: path and query, still percent-encoded.
    pub target: String,
    /// The header fields.
    pub headers: Headers,
}

impl RequestHead {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Headers,
}

impl ResponseHead {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Header slots for `buf`: a field takes a line, so no more than its line count are needed.
fn slots(buf: &[u8], limits: HeadLimits) -> Vec<httparse::Header<'static>> {
    let lines = buf.iter().filter(|b| **b == b'\n').count();
    vec![httparse::EMPTY_HEADER; lines.min(limits.max_headers)]
}

/// The length of a complete head of `n` bytes without the blank line that ends it (and the line
/// break before that).
fn content_len(buf: &[u8], n: usize) -> usize {
    let mut end = n;
    for _ in 0..2 {
        if buf.get(..end).is_some_and(|b| b.ends_with(b"\n")) {
            end -= 1;
            if buf.get(..end).is_some_and(|b| b.ends_with(b"\r")) {
                end -= 1;
            }
        }
    }
    end
}

/// Where the body starts once the head is complete; `None` while it is not.
fn complete(
    buf: &[u8],
    status: httparse::Status<usize>,
    limits: HeadLimits,
) -> Result<Option<usize>, HeadError> {
    match status {
        httparse::Status::Partial if buf.len() > limits.max_bytes => Err(HeadError::TooLarge),
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) if content_len(buf, n) > limits.max_bytes => Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => Ok(Some(n)),
    }
}

fn fields(raw: &[httparse::Header<'_>]) -> Result<Headers, HeadError> {
    raw.iter()
        .map(|h| {
            let value = core::str::from_utf8(h.value).map_err(|_| HeadError::Header)?;
            Ok((h.name.to_ascii_lowercase(), String::from(value.trim())))
        })
        .collect()
}

/// Parses a request head from the bytes received so far. `Ok(None)` while it is incomplete;
/// `Ok(Some((head, n)))` once complete, where the body starts at byte `n`. Blank lines before
/// the request line are skipped.
pub fn parse_request(buf: &[u8], limits: HeadLimits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut raw = slots(buf, limits);
    let mut req = httparse::Request::new(&mut raw);
    let status = req.parse(buf);
    let Some(n) = complete(buf, status?, limits)? else { return Ok(None) };
    let (Some(method), Some(target)) = (req.method, req.path) else { return Err(HeadError::StartLine) };
    let head = RequestHead {
        method: String::from(method),
        target: String::from(target),
        headers: fields(req.headers)?,
    };
    Ok(Some((head, n)))
}

/// Parses a response head from the bytes received so far, as [`parse_request`] does.
pub fn parse_response(buf: &[u8], limits: HeadLimits) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut raw = slots(buf, limits);
    let mut resp = httparse::Response::new(&mut raw);
    let status = resp.parse(buf);
    let Some(n) = complete(buf, status?, limits)? else { return Ok(None) };
    let code = resp.code.ok_or(HeadError::StartLine)?;
    Ok(Some((ResponseHead { status: code, headers: fields(resp.headers)? }, n)))
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 64, max_headers: 2 };

    #[test]
    fn parses_requests_whole_and_in_pieces() {
        let raw = b"\r\nGET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: h\r\nX-Thing:  v \r\n\r\nbody";
        let (head, n) = parse_request(raw, LIMITS).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/api/v1/pods?watch=1");
        assert_eq!(head.header("x-thing"), Some("v"));
        assert_eq!(&raw[n..], b"body");
        for cut in 0..n {
            assert_eq!(parse_request(&raw[..cut], LIMITS), Ok(None), "{cut}");
        }
        let lf = parse_request(b"GET / HTTP/1.0\nA: b\n\n", LIMITS).unwrap().unwrap();
        assert_eq!(lf.0.headers, [("a".into(), "b".into())]);
    }

    #[test]
    fn parses_responses() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nTransfer-Encoding: Chunked\r\n\r\nhello";
        let (head, n) = parse_response(raw, HeadLimits { max_bytes: 128, max_headers: 2 }).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.header("content-length"), Some("5"));
        assert!(is_chunked(&head.headers));
        assert_eq!(&raw[n..], b"hello");
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", LIMITS), Ok(None));
    }

    #[test]
    fn rejects_malformed_and_oversized_heads() {
        let req = |b: &[u8]| parse_request(b, LIMITS);
        let resp = |b: &[u8]| parse_response(b, LIMITS);
        assert_eq!(resp(b"SMTP 220 hi\r\n\r\n"), Err(HeadError::Version));
        assert_eq!(resp(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(HeadError::StartLine));
        assert_eq!(resp(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::Version));
        assert_eq!(req(b"G(T / HTTP/1.1\r\n\r\n"), Err(HeadError::StartLine));
        assert_eq!(req(b"GET / HTTP/1.1\r\nA: \xff\r\n\r\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), Err(HeadError::TooManyHeaders));
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        long.extend([b'a'; 100]);
        assert_eq!(resp(&long), Err(HeadError::TooLarge));
        // The bound counts the head without the blank line that ends it.
        let exact = b"GET /01234567890123456789012345678901234567890123456789 HTTP/1.1\r\n\r\n";
        assert_eq!(exact.len(), 64 + 4);
        assert!(req(exact).unwrap().is_some());
        let over = b"GET /012345678901234567890123456789012345678901234567890 HTTP/1.1\r\n\r\n";
        assert_eq!(req(over), Err(HeadError::TooLarge));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9u32;
        let mut bytes = Vec::new();
        for _ in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            bytes.push(b"GET HTTP/1.1 200 \r\n:aZ\xff"[(seed % 23) as usize]);
            let _ = parse_request(&bytes, HeadLimits::UNBOUNDED);
            let _ = parse_response(&bytes, LIMITS);
            if bytes.len() > 80 {
                bytes.clear();
            }
        }
    }
}
