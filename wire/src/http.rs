//! HTTP/1.x message heads (request line or status line, then headers), parsed with `httparse`,
//! and the framing of request bodies (RFC 9112 section 6 and 7).
//!
//! The parsers take the bytes received so far and say whether the head is complete; they bound
//! the head's size and its number of headers, and turn every malformed head into a
//! [`HeadError`], never a panic; [`HeadError::status`] is the answer a server gives.
//!
//! Requests are read strictly, so that a proxy in front of a server and the server agree on
//! where every message ends (RFC 9112 section 11.2, request smuggling):
//! - a line ends with CRLF; a bare LF is refused (RFC 9112 section 2.2 lets a recipient
//!   accept one; Go's net/http does, this parser does not);
//! - whitespace between a field name and its colon, and obs-fold (a line that starts with a
//!   space or a tab), are refused (RFC 9112 sections 5.1 and 5.2);
//! - the version follows Go's net/http, which kube-apiserver is built on: `HTTP/` DIGIT `.`
//!   DIGIT is well-formed, any other version is malformed (400); a major version other than 1
//!   is [`HeadError::UnsupportedVersion`] (505); `HTTP/1.x` with a minor version above 1 is
//!   read as `HTTP/1.1` (RFC 9110 section 2.5 says so too);
//! - the body's framing comes from [`request_framing`]: one `Content-Length` of digits (the
//!   same value repeated is one), or `Transfer-Encoding: chunked` exactly, never both;
//!   [`parse_chunk_size`] and [`is_field_line`] read the chunked coding's lines.
//!
//! Responses (read by the clients in this project) keep httparse's rules: a bare LF is
//! accepted there.

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
    /// The version is malformed (a response's: not `HTTP/1.0` or `HTTP/1.1`).
    Version,
    /// A request's version is well-formed but not HTTP/1 (`HTTP/2.0`, `HTTP/0.9`).
    UnsupportedVersion,
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
            HeadError::UnsupportedVersion => "unsupported protocol version",
            HeadError::StartLine => "malformed request or status line",
            HeadError::Header => "malformed header",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::TooLarge => "head too large",
        })
    }
}

impl HeadError {
    /// The status a server answers (as Go's net/http does): 505 for a version other than
    /// HTTP/1, 431 for a head over the limits, else 400.
    pub fn status(self) -> u16 {
        match self {
            HeadError::UnsupportedVersion => 505,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Version | HeadError::StartLine | HeadError::Header => 400,
        }
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

/// Whether a response's body is chunked: its last transfer coding is `chunked` (RFC 9112
/// section 6.3). Requests are framed by [`request_framing`] instead.
pub fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
}

/// How a request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// Why a request's body framing was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// `Content-Length` is not a number of digits, or two of them differ.
    ContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndEncoding,
    /// A `Transfer-Encoding` other than one field of exactly `chunked`.
    TransferEncoding,
    /// A line of the chunked coding is malformed (its size, an extension, a trailer field,
    /// a line end other than CRLF, or a line over [`MAX_CHUNK_LINE`]).
    Chunk,
}

impl FramingError {
    /// The status a server answers: 501 for a transfer coding it does not implement (RFC 9112
    /// section 6.1, and Go's net/http), else 400.
    pub fn status(self) -> u16 {
        match self {
            FramingError::TransferEncoding => 501,
            FramingError::ContentLength | FramingError::LengthAndEncoding | FramingError::Chunk => 400,
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::ContentLength => "invalid or conflicting Content-Length",
            FramingError::LengthAndEncoding => "both Content-Length and Transfer-Encoding",
            FramingError::TransferEncoding => "unsupported transfer encoding",
            FramingError::Chunk => "malformed chunked encoding",
        })
    }
}

/// The framing of a request's body by its headers (RFC 9112 section 6.3): `Content-Length`
/// fields must all carry the same number of ASCII digits (Go's net/http keeps one of equal
/// duplicates, and so does this); `Transfer-Encoding` must be one field of exactly `chunked`
/// (any case), as Go's net/http demands; a request with both is refused (RFC 9112 section
/// 6.3 lets a server reject it; Go lets the coding win).
pub fn request_framing(headers: &[(String, String)]) -> Result<BodyFraming, FramingError> {
    let mut encodings = headers.iter().filter(|(n, _)| n == "transfer-encoding");
    let mut length = None;
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || length.is_some_and(|(l, _)| l != v) {
            return Err(FramingError::ContentLength);
        }
        let n: u64 = v.parse().map_err(|_| FramingError::ContentLength)?;
        length = Some((v.as_str(), n));
    }
    let length = length.map(|(_, n)| n);
    match (encodings.next(), encodings.next()) {
        (None, _) => Ok(length.map_or(BodyFraming::Empty, BodyFraming::Length)),
        (Some((_, v)), None) if v.eq_ignore_ascii_case("chunked") => match length {
            Some(_) => Err(FramingError::LengthAndEncoding),
            None => Ok(BodyFraming::Chunked),
        },
        _ => Err(FramingError::TransferEncoding),
    }
}

/// The longest line of the chunked coding (a size line with its extensions, or a trailer
/// field), without its CRLF: 4 KiB, as Go's net/http.
pub const MAX_CHUNK_LINE: usize = 4096;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes of `s` from `i` while `f` holds: the index after them.
fn skip(s: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while s.get(i).is_some_and(|b| f(*b)) {
        i += 1;
    }
    i
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A quoted-string at `i` (RFC 9110 section 5.6.4): the index after it.
fn quoted(s: &[u8], mut i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        match *s.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if !(next == b'\t' || next == b' ' || next.is_ascii_graphic() || next >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b if b == b'\t' || b == b' ' || b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80 => i += 1,
            _ => return None,
        }
    }
}

/// The size of a chunk from its size line without the CRLF (RFC 9112 section 7.1): one to 16
/// hex digits and nothing else before the extensions (no sign, no `0x`, no spaces); the
/// extensions, `;name` or `;name=value` with a token or quoted-string value, are checked and
/// ignored.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    if line.len() > MAX_CHUNK_LINE {
        return Err(FramingError::Chunk);
    }
    let digits = skip(line, 0, |b| b.is_ascii_hexdigit());
    if digits == 0 || digits > 16 {
        return Err(FramingError::Chunk);
    }
    let mut size = 0u64;
    for b in &line[..digits] {
        let d = (*b as char).to_digit(16).ok_or(FramingError::Chunk)?;
        size = (size << 4) | u64::from(d);
    }
    let mut i = digits;
    while i < line.len() {
        i = skip(line, i, is_ws);
        if line.get(i) != Some(&b';') {
            return Err(FramingError::Chunk);
        }
        i = skip(line, i + 1, is_ws);
        let name = i;
        i = skip(line, i, is_tchar);
        if i == name {
            return Err(FramingError::Chunk);
        }
        let after_name = i;
        i = skip(line, i, is_ws);
        if line.get(i) == Some(&b'=') {
            i = skip(line, i + 1, is_ws);
            let value = i;
            i = skip(line, i, is_tchar);
            if i == value {
                i = quoted(line, i).ok_or(FramingError::Chunk)?;
            }
        } else {
            i = after_name;
        }
    }
    Ok(size)
}

/// Whether `line` (without its CRLF) is a well-formed field line, as a trailer field of the
/// chunked coding must be: a token, a colon right after it, then visible characters, spaces
/// and tabs.
pub fn is_field_line(line: &[u8]) -> bool {
    let name = skip(line, 0, is_tchar);
    name > 0
        && line.len() <= MAX_CHUNK_LINE
        && line.get(name) == Some(&b':')
        && line[name + 1..].iter().all(|b| is_ws(*b) || b.is_ascii_graphic() || *b >= 0x80)
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

/// Whether some LF in `b` does not follow a CR.
fn has_bare_lf(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, c)| *c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
}

/// The version of the request line in `buf` once that line is complete, if it has the form
/// `HTTP/` DIGIT `.` DIGIT: its offset, major and minor numbers.
fn request_version(buf: &[u8]) -> Option<(usize, u8, u8)> {
    let mut start = 0;
    while buf.get(start..start + 2) == Some(b"\r\n") {
        start += 2;
    }
    let end = start + buf.get(start..)?.iter().position(|b| *b == b'\n')?;
    let line = buf.get(start..end)?.strip_suffix(b"\r")?;
    let at = line.iter().rposition(|b| *b == b' ')? + 1;
    match line.get(at..)? {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Some((start + at, major - b'0', minor - b'0'))
        }
        _ => None,
    }
}

/// Parses a request head from the bytes received so far. `Ok(None)` while it is incomplete;
/// `Ok(Some((head, n)))` once complete, where the body starts at byte `n`. Empty lines (CRLF)
/// before the request line are skipped. The rules beyond httparse's are in the module's
/// documentation.
pub fn parse_request(buf: &[u8], limits: HeadLimits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    if has_bare_lf(buf) {
        return Err(HeadError::Header);
    }
    let patched;
    let mut buf = buf;
    match request_version(buf) {
        Some((_, major, _)) if major != 1 => return Err(HeadError::UnsupportedVersion),
        Some((at, _, minor)) if minor > 1 => {
            // HTTP/1.x is read as HTTP/1.1, which httparse knows.
            let mut copy = buf.to_vec();
            copy[at + 7] = b'1';
            patched = copy;
            buf = &patched;
        }
        _ => {}
    }
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
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
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
        let lf = parse_response(b"HTTP/1.0 200 OK\nA: b\n\n", LIMITS).unwrap().unwrap();
        assert_eq!(lf.0.headers, [("a".into(), "b".into())]);
    }

    #[test]
    fn requests_follow_rfc_9112_strictly() {
        let req = |b: &[u8]| parse_request(b, LIMITS).map(|r| r.map(|(h, _)| h));
        // A bare LF anywhere in a request head, complete or not.
        assert_eq!(req(b"GET / HTTP/1.0\nA: b\n\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/1.1\r\nA: b\n"), Err(HeadError::Header));
        assert_eq!(req(b"\nGET / HTTP/1.1\r\n\r\n"), Err(HeadError::Header));
        // Whitespace before the colon; obs-fold.
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), Err(HeadError::Header));
        assert_eq!(req(b"GET / HTTP/1.1\r\n A: b\r\n\r\n"), Err(HeadError::Header));
        // Versions as Go's net/http reads them.
        assert_eq!(req(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::UnsupportedVersion));
        assert_eq!(req(b"GET / HTTP/0.9\r\n"), Err(HeadError::UnsupportedVersion));
        assert_eq!(req(b"GET / HTTP/3.1\r\nHost: a\r\n\r\n"), Err(HeadError::UnsupportedVersion));
        for malformed in [&b"GET / HTTP/1.10\r\n\r\n"[..], b"GET / HTTP/1\r\n\r\n", b"GET / HTTQ/1.1\r\n\r\n"]
        {
            assert_eq!(req(malformed).map_err(HeadError::status), Err(400));
        }
        let seven = req(b"GET /x HTTP/1.7\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!((seven.method.as_str(), seven.target.as_str()), ("GET", "/x"));
        assert_eq!(req(b"GET / HTTP/1.7\r\nHo"), Ok(None));
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
        assert_eq!(HeadError::Header.status(), 400);
        // Empty lines before the request line are still skipped.
        assert!(req(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap().is_some());
    }

    fn framing(fields: &[(&str, &str)]) -> Result<BodyFraming, FramingError> {
        let headers: Headers = fields.iter().map(|(n, v)| (String::from(*n), String::from(*v))).collect();
        request_framing(&headers)
    }

    #[test]
    fn request_bodies_are_framed_by_one_length_or_chunked_alone() {
        assert_eq!(framing(&[]), Ok(BodyFraming::Empty));
        assert_eq!(framing(&[("content-length", "12")]), Ok(BodyFraming::Length(12)));
        assert_eq!(framing(&[("content-length", "3"), ("content-length", "3")]), Ok(BodyFraming::Length(3)));
        for bad in ["", "+2", "-1", "0x10", "1 2", "5, 5", "١", "99999999999999999999"] {
            assert_eq!(framing(&[("content-length", bad)]), Err(FramingError::ContentLength), "{bad}");
        }
        let two = framing(&[("content-length", "3"), ("content-length", "4")]);
        assert_eq!(two, Err(FramingError::ContentLength));
        assert_eq!(framing(&[("transfer-encoding", "chunked")]), Ok(BodyFraming::Chunked));
        assert_eq!(framing(&[("transfer-encoding", "CHUNKED")]), Ok(BodyFraming::Chunked));
        for bad in ["notchunked", "gzip, chunked", "chunked, chunked", "chunked;q=1", "identity", ""] {
            assert_eq!(framing(&[("transfer-encoding", bad)]), Err(FramingError::TransferEncoding), "{bad}");
        }
        let twice = framing(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]);
        assert_eq!(twice, Err(FramingError::TransferEncoding));
        let both = framing(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert_eq!(both, Err(FramingError::LengthAndEncoding));
        assert_eq!(FramingError::TransferEncoding.status(), 501);
        assert_eq!(FramingError::LengthAndEncoding.status(), 400);
        // Responses: chunked when it is the last coding.
        let resp = |v: &str| is_chunked(&[(String::from("transfer-encoding"), String::from(v))]);
        assert!(resp("chunked") && resp("gzip, Chunked"));
        assert!(!resp("notchunked") && !resp("chunked, gzip") && !resp(""));
    }

    #[test]
    fn chunk_sizes_are_hex_digits_with_checked_extensions() {
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"FFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        assert_eq!(parse_chunk_size(b"0000000000000010"), Ok(16));
        assert_eq!(parse_chunk_size(b"5;name"), Ok(5));
        assert_eq!(parse_chunk_size(b"5 ; a=b ;c=\"x \\\" y\""), Ok(5));
        for bad in [
            &b""[..],
            b"+2",
            b"-1",
            b"0x10",
            b" 5",
            b"5 ",
            b"5\r",
            b"10000000000000000",
            b"5;",
            b"5;=x",
            b"5;a=",
            b"5;a=\"open",
            b"5;a=b c",
            b"5 x",
            b"g",
        ] {
            assert_eq!(parse_chunk_size(bad), Err(FramingError::Chunk), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [&b"5;a="[..], &[b'x'; MAX_CHUNK_LINE][..]].concat();
        assert_eq!(parse_chunk_size(&long), Err(FramingError::Chunk));
        assert!(is_field_line(b"Expires: never") && is_field_line(b"X-A:"));
        for bad in [&b""[..], b" A: b", b"A : b", b"A", b"A: \x01", b": b"] {
            assert!(!is_field_line(bad), "{:?}", String::from_utf8_lossy(bad));
        }
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
        assert_eq!(req(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::UnsupportedVersion));
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
