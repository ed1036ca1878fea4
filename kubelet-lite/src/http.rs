//! A small HTTP/1.1 client: requests with a bearer token, responses framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or connection close, and a streaming
//! decoder for watch bodies (one JSON object per line).
//!
//! No-panic contract: [`ResponseParser::feed`] and [`LineDecoder::push`] accept any bytes
//! and either make progress or return an [`HttpError`]; every buffer they fill is bounded
//! by [`Limits`], so a hostile server cannot make the client allocate without bound.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;

use wire::http::{HeadError, HeadLimits};

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// JSON, the only encoding kubelet-lite sends.
pub const CONTENT_JSON: &str = "application/json";
/// Strategic merge patch (`PATCH .../status`).
pub const CONTENT_SMP: &str = "application/strategic-merge-patch+json";

/// One request to the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/api/v1/pods?watch=true`.
    pub path: String,
    /// Content type of `body`; `None` when there is no body.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// More header fields, sent after the standard ones; an `accept` or `authorization`
    /// here replaces the client's own.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A request without a body.
    pub fn new(method: Method, path: String) -> Self {
        Request { method, path, content_type: None, body: Vec::new(), headers: Vec::new() }
    }
    /// A request with a body of the given content type.
    pub fn with_body(method: Method, path: String, content_type: &'static str, body: Vec<u8>) -> Self {
        Request { method, path, content_type: Some(content_type), body, headers: Vec::new() }
    }
    /// The request with one more header field.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The request's bytes on the wire. `host` goes in the Host header; `token`, when
    /// given, in `Authorization: Bearer`. The connection is closed after the response.
    pub fn encode(&self, host: &str, token: Option<&str>) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kubelet-lite/0.1\r\nConnection: close\r\n",
            self.method.as_str(),
            self.path,
            host
        );
        if !self.has_header("accept") {
            out.push_str("Accept: application/json\r\n");
        }
        if let Some(t) = token.filter(|_| !self.has_header("authorization")) {
            out.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(ct) = self.content_type {
            out.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if self.content_type.is_some() || !self.body.is_empty() {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Size bounds for everything the client buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Status line plus headers.
    pub max_head_bytes: usize,
    /// A whole (non-streamed) body.
    pub max_body_bytes: usize,
    /// One line of a watch stream (one event).
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 64 * 1024, max_body_bytes: 16 << 20, max_line_bytes: 4 << 20 }
    }
}

/// What went wrong talking HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The transport failed (connect, read or write), with its message.
    Transport(String),
    /// The status line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A header line has no colon or is not UTF-8.
    BadHeader,
    /// Content-Length is not a number.
    BadContentLength,
    /// A chunk size line is not hexadecimal or a chunk is not followed by CRLF.
    BadChunk,
    /// The status line and headers exceed the limit.
    HeadTooLarge,
    /// The body exceeds the limit.
    BodyTooLarge,
    /// One watch line exceeds the limit.
    LineTooLarge,
    /// The connection closed before the response was complete.
    Truncated,
    /// The connection closed before a byte of the response came.
    NoAnswer,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Transport(m) => write!(f, "transport error: {m}"),
            HttpError::BadStatusLine => f.write_str("malformed HTTP status line"),
            HttpError::BadHeader => f.write_str("malformed HTTP header"),
            HttpError::BadContentLength => f.write_str("malformed Content-Length"),
            HttpError::BadChunk => f.write_str("malformed chunked encoding"),
            HttpError::HeadTooLarge => f.write_str("response headers too large"),
            HttpError::BodyTooLarge => f.write_str("response body too large"),
            HttpError::LineTooLarge => f.write_str("watch event too large"),
            HttpError::Truncated => f.write_str("connection closed before the response was complete"),
            HttpError::NoAnswer => f.write_str("connection closed before any answer"),
        }
    }
}

/// Status line and headers of a response (header names lower-cased, values trimmed).
pub use wire::http::ResponseHead;

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: wire::http::Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::http::header(&self.headers, name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Incremental response parser: feed it bytes as they arrive; it yields the head once
/// complete and then body bytes (de-chunked).
#[derive(Debug)]
pub struct ResponseParser {
    limits: Limits,
    buf: Vec<u8>,
    head: Option<ResponseHead>,
    framing: Framing,
    chunk: ChunkState,
    body_seen: usize,
    /// De-framed body bytes not yet taken.
    body: Vec<u8>,
    complete: bool,
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// The body's framing by the head: chunked, a length, none for the statuses without a body,
/// else until the connection closes.
fn framing(head: &ResponseHead) -> Result<Framing, HttpError> {
    let status = head.status;
    Ok(if wire::http::is_chunked(&head.headers) {
        Framing::Chunked
    } else if let Some(len) = head.header("content-length") {
        Framing::Length(len.parse().map_err(|_| HttpError::BadContentLength)?)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    })
}

impl ResponseParser {
    /// A parser with the given bounds.
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            limits,
            buf: Vec::new(),
            head: None,
            framing: Framing::UntilClose,
            chunk: ChunkState::Size,
            body_seen: 0,
            body: Vec::new(),
            complete: false,
        }
    }

    /// The head, once it has been parsed.
    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    /// True once the body is complete by its framing.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Takes the body bytes decoded so far.
    pub fn take_body(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.body)
    }

    /// Body bytes decoded so far, without taking them.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Feeds bytes from the connection. `body_limit` bounds the body bytes held at once
    /// (the whole body for a plain request, one read's worth for a stream).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpError> {
        if self.complete {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        if self.head.is_none() {
            let limits = HeadLimits { max_bytes: self.limits.max_head_bytes, max_headers: usize::MAX };
            let parsed = wire::http::parse_response(&self.buf, limits).map_err(|e| match e {
                HeadError::TooLarge => HttpError::HeadTooLarge,
                HeadError::Version | HeadError::UnsupportedVersion | HeadError::StartLine => {
                    HttpError::BadStatusLine
                }
                HeadError::Header | HeadError::TooManyHeaders => HttpError::BadHeader,
            })?;
            let Some((head, len)) = parsed else { return Ok(()) };
            let framing = framing(&head)?;
            self.buf.drain(..len);
            self.head = Some(head);
            self.framing = framing;
            if framing == Framing::Length(0) {
                self.complete = true;
            }
        }
        self.decode_body()
    }

    fn push_body(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        self.body_seen = self.body_seen.saturating_add(bytes.len());
        if self.body.len() + bytes.len() > self.limits.max_body_bytes {
            return Err(HttpError::BodyTooLarge);
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }

    fn decode_body(&mut self) -> Result<(), HttpError> {
        match self.framing {
            Framing::Length(n) => {
                let want = n.saturating_sub(self.body_seen);
                if want > self.limits.max_body_bytes {
                    return Err(HttpError::BodyTooLarge);
                }
                let take = want.min(self.buf.len());
                let bytes: Vec<u8> = self.buf.drain(..take).collect();
                self.push_body(&bytes)?;
                if self.body_seen >= n {
                    self.complete = true;
                }
                Ok(())
            }
            Framing::UntilClose => {
                let bytes = core::mem::take(&mut self.buf);
                self.push_body(&bytes)
            }
            Framing::Chunked => loop {
                match self.chunk {
                    ChunkState::Size => {
                        let Some(end) = find_crlf(&self.buf) else {
                            if self.buf.len() > 1024 {
                                return Err(HttpError::BadChunk);
                            }
                            return Ok(());
                        };
                        let line = core::str::from_utf8(&self.buf[..end]).map_err(|_| HttpError::BadChunk)?;
                        let size_hex = line.split(';').next().unwrap_or("").trim();
                        if size_hex.is_empty() || size_hex.len() > 15 {
                            return Err(HttpError::BadChunk);
                        }
                        let size = usize::from_str_radix(size_hex, 16).map_err(|_| HttpError::BadChunk)?;
                        self.buf.drain(..end + 2);
                        self.chunk = if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) };
                    }
                    ChunkState::Data(left) => {
                        if self.buf.is_empty() {
                            return Ok(());
                        }
                        let take = left.min(self.buf.len());
                        let bytes: Vec<u8> = self.buf.drain(..take).collect();
                        self.push_body(&bytes)?;
                        self.chunk =
                            if take == left { ChunkState::DataEnd } else { ChunkState::Data(left - take) };
                    }
                    ChunkState::DataEnd => {
                        if self.buf.len() < 2 {
                            return Ok(());
                        }
                        if &self.buf[..2] != b"\r\n" {
                            return Err(HttpError::BadChunk);
                        }
                        self.buf.drain(..2);
                        self.chunk = ChunkState::Size;
                    }
                    ChunkState::Trailer => {
                        let Some(end) = find_crlf(&self.buf) else {
                            if self.buf.len() > self.limits.max_head_bytes {
                                return Err(HttpError::HeadTooLarge);
                            }
                            return Ok(());
                        };
                        self.buf.drain(..end + 2);
                        if end == 0 {
                            self.chunk = ChunkState::Done;
                            self.complete = true;
                            return Ok(());
                        }
                    }
                    ChunkState::Done => return Ok(()),
                }
            },
        }
    }

    /// The connection reached end of file: completes a close-delimited body, or reports
    /// truncation.
    pub fn finish(&mut self) -> Result<(), HttpError> {
        if self.complete {
            return Ok(());
        }
        if self.head.is_some() && self.framing == Framing::UntilClose {
            self.complete = true;
            return Ok(());
        }
        Err(HttpError::Truncated)
    }
}

/// A byte stream to the API server (plain TCP or TLS), supplied by the host.
pub trait Transport {
    /// Opens a fresh connection to the server, closing any previous one.
    fn connect(&mut self) -> Result<(), HttpError>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError>;
    /// Reads some bytes into `buf`; `Ok(0)` is end of file.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError>;
}

/// A connection whose operations may have to wait for the network: each returns a future
/// that a runtime without threads polls again later (the kernel's transport answers
/// `Pending` while its socket has nothing for it). Every [`Transport`] is one, whose futures
/// are ready at their first poll.
pub trait AsyncTransport {
    /// Opens a fresh connection to the server, closing any previous one.
    fn connect(&mut self) -> impl Future<Output = Result<(), HttpError>>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = Result<(), HttpError>>;
    /// Reads some bytes into `buf`; `Ok(0)` is end of file.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, HttpError>>;
}

impl<T: Transport> AsyncTransport for T {
    fn connect(&mut self) -> impl Future<Output = Result<(), HttpError>> {
        core::future::ready(Transport::connect(self))
    }
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = Result<(), HttpError>> {
        core::future::ready(Transport::write_all(self, buf))
    }
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = Result<usize, HttpError>> {
        core::future::ready(Transport::read(self, buf))
    }
}

/// Runs `f` to its end, polling it again whenever it waits: for futures over [`Transport`]s,
/// which never do.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        core::hint::spin_loop();
    }
}

/// A response read as it arrives over an [`AsyncTransport`]: one request per connection.
pub struct AsyncStream<'a, T: AsyncTransport> {
    transport: &'a mut T,
    parser: ResponseParser,
    /// The response status.
    pub status: u16,
    ended: bool,
}

impl<'a, T: AsyncTransport> AsyncStream<'a, T> {
    /// Connects, sends `req` naming `host` and authenticating with `token`, and reads the
    /// response head.
    pub async fn open(
        transport: &'a mut T,
        host: &str,
        token: Option<&str>,
        req: &Request,
        limits: Limits,
    ) -> Result<AsyncStream<'a, T>, HttpError> {
        transport.connect().await?;
        transport.write_all(&req.encode(host, token)).await?;
        let mut parser = ResponseParser::new(limits);
        let mut buf = [0u8; 4096];
        let mut any = false;
        while parser.head().is_none() {
            let n = transport.read(&mut buf).await?;
            if n == 0 {
                return Err(if any { HttpError::Truncated } else { HttpError::NoAnswer });
            }
            any = true;
            parser.feed(buf.get(..n).unwrap_or(&[]))?;
        }
        let status = parser.head().map(|h| h.status).unwrap_or(0);
        Ok(AsyncStream { transport, parser, status, ended: false })
    }

    /// The first value of the response header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parser.head().and_then(|h| h.header(name))
    }

    /// The next body bytes; `Ok(None)` once the body is complete.
    pub async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            let pending = self.parser.take_body();
            if !pending.is_empty() {
                return Ok(Some(pending));
            }
            if self.ended || self.parser.is_complete() {
                return Ok(None);
            }
            let mut buf = [0u8; 16384];
            let n = self.transport.read(&mut buf).await?;
            if n == 0 {
                self.parser.finish()?;
                self.ended = true;
                continue;
            }
            self.parser.feed(buf.get(..n).unwrap_or(&[]))?;
        }
    }
}

/// An HTTP/1.1 client: one connection per request.
pub struct Client<T: Transport> {
    pub transport: T,
    host: String,
    token: Option<String>,
    limits: Limits,
}

impl<T: Transport> Client<T> {
    /// A client that names `host` in the Host header and authenticates with `token`.
    pub fn new(transport: T, host: String, token: Option<String>, limits: Limits) -> Self {
        Client { transport, host, token, limits }
    }

    fn start(&mut self, req: &Request) -> Result<ResponseParser, HttpError> {
        self.transport.connect()?;
        self.transport.write_all(&req.encode(&self.host, self.token.as_deref()))?;
        Ok(ResponseParser::new(self.limits))
    }

    /// Sends `req` and reads the whole response.
    pub fn send(&mut self, req: &Request) -> Result<Response, HttpError> {
        let mut p = self.start(req)?;
        let mut buf = [0u8; 4096];
        while !p.is_complete() {
            let n = self.transport.read(&mut buf)?;
            if n == 0 {
                p.finish()?;
                break;
            }
            p.feed(buf.get(..n).unwrap_or(&[]))?;
        }
        let head = p.head().cloned().ok_or(HttpError::Truncated)?;
        Ok(Response { status: head.status, headers: head.headers, body: p.take_body() })
    }

    /// Sends `req` and returns a stream positioned after the response head.
    pub fn open_stream(&mut self, req: &Request) -> Result<Stream<'_, T>, HttpError> {
        let mut p = self.start(req)?;
        let mut buf = [0u8; 4096];
        while p.head().is_none() {
            let n = self.transport.read(&mut buf)?;
            if n == 0 {
                return Err(HttpError::Truncated);
            }
            p.feed(buf.get(..n).unwrap_or(&[]))?;
        }
        let status = p.head().map(|h| h.status).unwrap_or(0);
        Ok(Stream { client: self, parser: p, status, ended: false })
    }
}

/// A response body read as it arrives (watch, log follow).
pub struct Stream<'a, T: Transport> {
    client: &'a mut Client<T>,
    parser: ResponseParser,
    /// The response status.
    pub status: u16,
    ended: bool,
}

impl<T: Transport> Stream<'_, T> {
    /// The first value of the response header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.parser.head().and_then(|h| h.header(name))
    }

    /// The next body bytes; `Ok(None)` once the body is complete.
    pub fn next_bytes(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            let pending = self.parser.take_body();
            if !pending.is_empty() {
                return Ok(Some(pending));
            }
            if self.ended || self.parser.is_complete() {
                return Ok(None);
            }
            let mut buf = [0u8; 4096];
            let n = self.client.transport.read(&mut buf)?;
            if n == 0 {
                self.parser.finish()?;
                self.ended = true;
                continue;
            }
            self.parser.feed(buf.get(..n).unwrap_or(&[]))?;
        }
    }
}

/// Splits a byte stream into lines (one watch event each), across chunk boundaries.
/// Blank lines are skipped; a line longer than the limit is an error.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max_line_bytes: usize,
}

impl LineDecoder {
    /// A decoder that rejects lines longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        LineDecoder { buf: Vec::new(), max_line_bytes }
    }

    /// Adds bytes and returns every line they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, HttpError> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                let line = core::mem::take(&mut self.buf);
                let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
                if !trimmed.iter().all(u8::is_ascii_whitespace) {
                    out.push(trimmed.to_vec());
                }
            } else {
                if self.buf.len() >= self.max_line_bytes {
                    self.buf.clear();
                    return Err(HttpError::LineTooLarge);
                }
                self.buf.push(b);
            }
        }
        Ok(out)
    }

    /// At end of stream: a final line without a newline, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = core::mem::take(&mut self.buf);
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode_query(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec;

    fn parse_all(bytes: &[u8], step: usize) -> Result<(u16, Vec<u8>), HttpError> {
        let mut p = ResponseParser::new(Limits::default());
        let mut body = Vec::new();
        for piece in bytes.chunks(step.max(1)) {
            p.feed(piece)?;
            body.extend(p.take_body());
        }
        p.finish()?;
        body.extend(p.take_body());
        Ok((p.head().map(|h| h.status).unwrap_or(0), body))
    }

    #[test]
    fn encodes_requests_with_token_and_length() {
        let r = Request::with_body(Method::Post, "/api/v1/nodes".into(), CONTENT_JSON, b"{}".to_vec());
        let s = String::from_utf8(r.encode("h:6443", Some("tok"))).unwrap();
        assert!(s.starts_with("POST /api/v1/nodes HTTP/1.1\r\nHost: h:6443\r\n"));
        assert!(s.contains("Authorization: Bearer tok\r\n"));
        assert!(s.contains("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"));
        let g = String::from_utf8(Request::new(Method::Get, "/x".into()).encode("h", None)).unwrap();
        assert!(!g.contains("Content-Length") && !g.contains("Authorization"));
    }

    #[test]
    fn parses_content_length_and_chunked_in_any_split() {
        let cl = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX: y\r\n\r\nhelloEXTRA";
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for step in 1..20 {
            assert_eq!(parse_all(cl, step), Ok((201, b"hello".to_vec())));
            assert_eq!(parse_all(ch, step), Ok((200, b"hello world".to_vec())));
        }
        assert_eq!(parse_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close", 3), Ok((200, b"until close".to_vec())));
    }

    #[test]
    fn rejects_malformed_and_truncated_responses() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", HttpError::Truncated),
            (b"HTTP/1.1 200 OK\r\nContent-Le", HttpError::Truncated),
            (b"SMTP 220 hi\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 2000 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", HttpError::BadHeader),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HttpError::BadContentLength),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HttpError::BadChunk),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", HttpError::BadChunk),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
                HttpError::BadChunk,
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", HttpError::Truncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_all(bytes, 4).err().as_ref(),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn bounds_head_and_body() {
        let limits = Limits { max_head_bytes: 64, max_body_bytes: 16, max_line_bytes: 8 };
        let mut p = ResponseParser::new(limits);
        let mut long_head = b"HTTP/1.1 200 OK\r\n".to_vec();
        long_head.extend(vec![b'a'; 100]);
        assert_eq!(p.feed(&long_head), Err(HttpError::HeadTooLarge));
        let mut p = ResponseParser::new(limits);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(HttpError::BodyTooLarge)
        );
        let mut p = ResponseParser::new(limits);
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(p.feed(b"20\r\n0123456789abcdef0123"), Err(HttpError::BodyTooLarge));
        let mut d = LineDecoder::new(8);
        assert_eq!(d.push(b"0123456789"), Err(HttpError::LineTooLarge));
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random byte soup, plus mutations of a valid response.
        let valid = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
        let mut seed = 0x1234_5678u32;
        for round in 0..2000 {
            let mut bytes = valid.clone();
            for _ in 0..(round % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let at = seed as usize % bytes.len();
                bytes[at] = (seed >> 8) as u8;
            }
            let cut = seed as usize % (bytes.len() + 1);
            let _ = parse_all(&bytes[..cut], (round % 9) + 1);
            let mut d = LineDecoder::new(32);
            let _ = d.push(&bytes);
        }
    }

    #[test]
    fn line_decoder_splits_across_chunks() {
        let mut d = LineDecoder::new(1024);
        assert_eq!(d.push(b"{\"a\":").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(d.push(b"1}\n\n{\"b\"").unwrap(), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(d.push(b":2}\r\n{\"c\":3}").unwrap(), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(d.finish(), Some(b"{\"c\":3}".to_vec()));
        assert_eq!(d.finish(), None);
    }

    /// A transport that replays canned server bytes in fixed-size reads and records writes.
    struct Fake {
        replies: VecDeque<Vec<u8>>,
        current: Vec<u8>,
        read_size: usize,
        written: Vec<u8>,
    }
    impl Transport for Fake {
        fn connect(&mut self) -> Result<(), HttpError> {
            self.current = self.replies.pop_front().ok_or(HttpError::Transport("refused".into()))?;
            Ok(())
        }
        fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError> {
            self.written.extend_from_slice(buf);
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
            let n = self.read_size.min(buf.len()).min(self.current.len());
            buf[..n].copy_from_slice(&self.current[..n]);
            self.current.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn client_sends_and_streams_over_a_transport() {
        let watch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            8\r\n{\"type\":\r\n12\r\n\"ADDED\",\"n\":1}\n{\"t\r\n8\r\nype\":2}\n\r\n0\r\n\r\n";
        let fake = Fake {
            replies: VecDeque::from(vec![
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
                watch.to_vec(),
            ]),
            current: Vec::new(),
            read_size: 3,
            written: Vec::new(),
        };
        let mut c = Client::new(fake, "api".into(), Some("t".into()), Limits::default());
        let r = c.send(&Request::new(Method::Get, "/a".into())).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
        let mut s = c.open_stream(&Request::new(Method::Get, "/w".into())).unwrap();
        assert_eq!(s.status, 200);
        let mut d = LineDecoder::new(1024);
        let mut lines = Vec::new();
        while let Some(b) = s.next_bytes().unwrap() {
            lines.extend(d.push(&b).unwrap());
        }
        assert_eq!(lines, vec![b"{\"type\":\"ADDED\",\"n\":1}".to_vec(), b"{\"type\":2}".to_vec()]);
        assert!(String::from_utf8_lossy(&c.transport.written).contains("GET /w HTTP/1.1"));
        assert!(c.send(&Request::new(Method::Get, "/b".into())).is_err());
    }

    #[test]
    fn request_headers_replace_the_defaults() {
        let plain = String::from_utf8(Request::new(Method::Get, "/a".into()).encode("h", Some("t"))).unwrap();
        assert!(
            plain.contains("Accept: application/json\r\n") && plain.contains("Authorization: Bearer t\r\n")
        );
        let req = Request::new(Method::Get, "/a".into())
            .with_header("Accept", "application/vnd.oci.image.index.v1+json")
            .with_header("Authorization", "Basic dTpw");
        let wire = String::from_utf8(req.encode("h", Some("t"))).unwrap();
        assert!(wire.contains("\r\nAccept: application/vnd.oci.image.index.v1+json\r\n"), "{wire}");
        assert!(wire.contains("\r\nAuthorization: Basic dTpw\r\n"), "{wire}");
        assert!(!wire.contains("application/json") && !wire.contains("Bearer"), "{wire}");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("spec.nodeName=n1"), "spec.nodeName%3Dn1");
    }
}
