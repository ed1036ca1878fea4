//! The kubelet's HTTPS endpoint, served from the node's own stack: the API server fetches
//! `kubectl logs` from `GET /containerLogs/{namespace}/{pod}/{container}` here (with
//! `follow`, `tailLines`, `timestamps`, `previous`, `limitBytes` and `sinceSeconds`, rendered
//! by kubelet-lite's `logs` over the runtime's log buffers), and `GET /healthz` answers `ok`.
//!
//! Only clients whose certificate chains to the cluster CA get past the TLS handshake (the
//! kubelet's `--client-ca-file`): that is how the API server proves itself. Everything a
//! client sends is bounded: at most [`MAX_CONNECTIONS`] connections at once (more are
//! reset), [`HEAD_MS`] from connecting to a complete request head of at most [`MAX_HEAD`]
//! bytes, one request per connection, and a follow stream that stops rendering while the
//! client does not read (and is dropped after [`STALL_MS`] without progress). Pure: driven by
//! [`KubeletServer::poll`] between polls of the stack, with the time passed in.
#![forbid(unsafe_code)]

use super::pipe::{PipeError, TlsPipe};
use super::stack::{NetError, Stack, Tcp, TcpState};
use super::tls::{ServerTlsConfig, TlsServerSession};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kubelet_lite::logs::{render_from, Cursor, LogRequest};
use kubelet_lite::runtime::Runtime;
use kubelet_lite::time::Time;
use wire::http::{parse_request, HeadLimits};

/// Most connections served at once; more are reset until one ends.
pub const MAX_CONNECTIONS: usize = 8;
/// The longest request head taken.
pub const MAX_HEAD: usize = 16 << 10;
/// The most header fields taken.
const MAX_HEADERS: usize = 64;
/// How long a client has from connecting to a complete request head (TLS handshake included).
pub const HEAD_MS: u64 = 15_000;
/// How often a follow stream looks for new lines.
pub const FOLLOW_MS: u64 = 250;
/// How long a connection may go without the client taking a byte while some wait for it.
pub const STALL_MS: u64 = 60_000;
/// How long a closed connection may take to deliver its last bytes before it is reset.
const LINGER_MS: u64 = 5_000;
/// Most bytes read from one connection per poll, so one busy client cannot hold the CPU.
const READ_PER_POLL: usize = 32 << 10;

/// What the endpoint has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections taken.
    pub accepted: u64,
    /// Connections whose TLS handshake failed (no or a wrong client certificate, or junk).
    pub refused: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Connections dropped for taking too long (head) or not reading (stream).
    pub timed_out: u64,
}

enum Phase {
    /// Reading the request head.
    Head(Vec<u8>),
    /// Following a container's log.
    Follow { req: LogRequest, cursor: Cursor, next_ms: u64 },
    /// The answer is complete: deliver it, then close.
    Closing { tls_closed: bool, tcp_closed: bool, since_ms: u64 },
}

struct Conn {
    tcp: Tcp,
    tls: TlsServerSession,
    phase: Phase,
    /// Plaintext of the answer not yet taken by TLS.
    out: Vec<u8>,
    /// Ciphertext both ways.
    pipe: TlsPipe,
    opened_ms: u64,
    progress_ms: u64,
}

impl From<PipeError> for Ended {
    fn from(e: PipeError) -> Self {
        match e {
            PipeError::Reset(_) => Ended::Gone,
            PipeError::Tls(e) => Ended::Tls(format!("{e}")),
        }
    }
}

/// Why a connection ends without an orderly close.
enum Ended {
    /// The client went away or reset the connection.
    Gone,
    /// The TLS handshake or a record failed.
    Tls(String),
    /// Too slow.
    TimedOut,
}

/// The endpoint: its listening sockets and its connections.
pub struct KubeletServer {
    tls: ServerTlsConfig,
    port: u16,
    listening: Vec<Tcp>,
    conns: Vec<Conn>,
    counters: Counters,
    /// The last TLS refusal, for the console (a client cannot make it print more than one
    /// line per kind of refusal).
    last_refusal: Option<String>,
}

/// A whole answer with a text body.
fn answer(code: u16, text: &str) -> Vec<u8> {
    let reason = wire::http::reason(code);
    let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// `bytes` as one chunk of a chunked body (nothing when empty: an empty chunk ends it).
fn chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
}

impl KubeletServer {
    /// Starts listening on `port`.
    pub fn new(s: &mut Stack, port: u16, tls: ServerTlsConfig) -> Result<KubeletServer, NetError> {
        let mut k = KubeletServer {
            tls,
            port,
            listening: Vec::new(),
            conns: Vec::new(),
            counters: Counters::default(),
            last_refusal: None,
        };
        k.listen(s)?;
        Ok(k)
    }

    /// What it has seen so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Keeps a socket listening for every free connection slot (a listening socket takes one
    /// connection), so that connections arriving together are all taken.
    fn listen(&mut self, s: &mut Stack) -> Result<(), NetError> {
        while self.conns.len() + self.listening.len() < MAX_CONNECTIONS {
            self.listening.push(s.tcp_listen(self.port)?);
        }
        Ok(())
    }

    /// Takes new connections, moves every connection along, answers what has been asked.
    /// Returns the refusals to report (at most one line per new kind of refusal).
    pub fn poll(&mut self, s: &mut Stack, rt: &dyn Runtime, now_ms: u64, wall: Time) -> Option<String> {
        self.accept(s, now_ms);
        let mut report = None;
        let mut i = 0;
        while i < self.conns.len() {
            match self.step(s, i, rt, now_ms, wall) {
                Ok(true) => i += 1,
                Ok(false) => {
                    let c = self.conns.swap_remove(i);
                    let _ = s.tcp_remove(c.tcp);
                }
                Err(why) => {
                    let c = self.conns.swap_remove(i);
                    let _ = s.tcp_remove(c.tcp);
                    match why {
                        Ended::Gone => {}
                        Ended::TimedOut => self.counters.timed_out += 1,
                        Ended::Tls(why) => {
                            self.counters.refused += 1;
                            if self.last_refusal.as_ref() != Some(&why) {
                                report = Some(format!("kubelet endpoint: refused a client: {why}"));
                                self.last_refusal = Some(why);
                            }
                        }
                    }
                }
            }
        }
        // A listener lost to an error is replaced on the next poll.
        let _ = self.listen(s);
        report
    }

    fn accept(&mut self, s: &mut Stack, now_ms: u64) {
        let mut i = 0;
        while i < self.listening.len() {
            let t = self.listening[i];
            match s.tcp_state(t) {
                Ok(TcpState::Opening) => i += 1,
                Ok(TcpState::Open) => {
                    self.listening.swap_remove(i);
                    match TlsServerSession::accept(&self.tls) {
                        Ok(tls) => {
                            self.counters.accepted += 1;
                            self.conns.push(Conn {
                                tcp: t,
                                tls,
                                phase: Phase::Head(Vec::new()),
                                out: Vec::new(),
                                pipe: TlsPipe::default(),
                                opened_ms: now_ms,
                                progress_ms: now_ms,
                            });
                        }
                        Err(_) => drop(s.tcp_remove(t)),
                    }
                }
                // Reset or closed before it was taken.
                _ => {
                    self.listening.swap_remove(i);
                    let _ = s.tcp_remove(t);
                }
            }
        }
        let _ = self.listen(s);
    }

    /// Moves connection `i` along: Ok(true) to keep it, Ok(false) when it is done.
    fn step(
        &mut self,
        s: &mut Stack,
        i: usize,
        rt: &dyn Runtime,
        now_ms: u64,
        wall: Time,
    ) -> Result<bool, Ended> {
        let c = &mut self.conns[i];
        c.receive(s)?;
        let mut plain = Vec::new();
        c.tls.read(&mut plain).map_err(|e| Ended::Tls(format!("{e}")))?;
        if let Phase::Head(head) = &mut c.phase {
            let room = (MAX_HEAD + 4).saturating_sub(head.len());
            head.extend_from_slice(&plain[..room.min(plain.len())]);
            let limits = HeadLimits { max_bytes: MAX_HEAD, max_headers: MAX_HEADERS };
            match parse_request(head, limits) {
                Ok(None) if head.len() > MAX_HEAD => c.finish(answer(431, "request head too large"), now_ms),
                Ok(None) => {
                    if now_ms.saturating_sub(c.opened_ms) > HEAD_MS {
                        return Err(Ended::TimedOut);
                    }
                }
                // 431 for a head over the limits, 505 for a version other than HTTP/1, else 400.
                Err(e) => c.finish(answer(e.status(), &format!("{e}")), now_ms),
                Ok(Some((head, _))) => c.begin(&head.method, &head.target, rt, now_ms, wall),
            }
            if !matches!(c.phase, Phase::Head(_)) {
                self.counters.answered += 1;
            }
        }
        if let Phase::Follow { req, cursor, next_ms } = &mut c.phase {
            if c.out.is_empty() && now_ms >= *next_ms {
                *next_ms = now_ms + FOLLOW_MS;
                let (bytes, done) = match render_from(req, rt, wall, Some(*cursor)) {
                    Ok(piece) => {
                        *cursor = piece.cursor;
                        (piece.bytes, piece.done)
                    }
                    // The pod is gone: the stream ends.
                    Err(_) => (Vec::new(), true),
                };
                chunk(&mut c.out, &bytes);
                if done {
                    let mut last = core::mem::take(&mut c.out);
                    last.extend_from_slice(b"0\r\n\r\n");
                    c.finish(last, now_ms);
                }
            }
        }
        c.transmit(s, now_ms)?;
        if let Phase::Closing { mut tls_closed, mut tcp_closed, since_ms } = c.phase {
            if c.out.is_empty() && !tls_closed {
                tls_closed = true;
                c.tls.close().map_err(|e| Ended::Tls(format!("{e}")))?;
                c.transmit(s, now_ms)?;
            }
            if tls_closed && !c.pipe.has_unsent() && !tcp_closed {
                tcp_closed = true;
                let _ = s.tcp_close(c.tcp);
            }
            c.phase = Phase::Closing { tls_closed, tcp_closed, since_ms };
            let closed = matches!(s.tcp_state(c.tcp), Ok(TcpState::Closed) | Err(_));
            return Ok(!(closed || now_ms.saturating_sub(since_ms) > LINGER_MS));
        }
        if c.pipe.has_unsent() && now_ms.saturating_sub(c.progress_ms) > STALL_MS {
            return Err(Ended::TimedOut);
        }
        Ok(true)
    }
}

impl Conn {
    /// Reads what the client sent and hands it to TLS. A client that closes ends the
    /// connection, unless an answer is on its way: that is still delivered.
    fn receive(&mut self, s: &mut Stack) -> Result<(), Ended> {
        let closed = self.pipe.receive(s, self.tcp, &mut self.tls, READ_PER_POLL).map_err(Ended::from)?;
        let closing = matches!(self.phase, Phase::Closing { .. });
        if (closed || self.tls.peer_closed()) && !closing {
            return Err(Ended::Gone);
        }
        Ok(())
    }

    /// Moves the answer through TLS to TCP.
    fn transmit(&mut self, s: &mut Stack, now_ms: u64) -> Result<(), Ended> {
        if !self.out.is_empty() && !self.tls.is_handshaking() {
            let n = self.tls.write(&self.out).map_err(|e| Ended::Tls(format!("{e}")))?;
            self.out.drain(..n);
        }
        let sent = self.pipe.transmit(s, self.tcp, &mut self.tls).map_err(Ended::from)?;
        if sent > 0 || !self.pipe.has_unsent() {
            self.progress_ms = now_ms;
        }
        Ok(())
    }

    /// The answer is `bytes`; then the connection closes.
    fn finish(&mut self, bytes: Vec<u8>, now_ms: u64) {
        self.out.extend_from_slice(&bytes);
        self.phase = Phase::Closing { tls_closed: false, tcp_closed: false, since_ms: now_ms };
    }

    /// Answers a request head.
    fn begin(&mut self, method: &str, target: &str, rt: &dyn Runtime, now_ms: u64, wall: Time) {
        if method != "GET" {
            return self.finish(answer(405, "only GET is served here"), now_ms);
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        if path == "/healthz" {
            return self.finish(answer(200, "ok"), now_ms);
        }
        let req = match LogRequest::parse(target) {
            Ok(r) => r,
            Err(e) => return self.finish(answer(e.status(), &format!("{e}")), now_ms),
        };
        let first = match render_from(&req, rt, wall, None) {
            Ok(c) => c,
            Err(e) => return self.finish(answer(e.status(), &format!("{e}")), now_ms),
        };
        if !req.follow || first.done {
            let mut a = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                first.bytes.len()
            )
            .into_bytes();
            a.extend_from_slice(&first.bytes);
            return self.finish(a, now_ms);
        }
        self.out.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        chunk(&mut self.out, &first.bytes);
        self.phase = Phase::Follow { req, cursor: first.cursor, next_ms: now_ms + FOLLOW_MS };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::stack::testnet::{corpus, pair, pump};
    use crate::net::tls::testpki::{now, os_random, pki, std_client, Pki};
    use kubelet_lite::sim::SimRuntime;
    use rustls::ClientConnection;
    use std::io::{Read, Write};

    const PORT: u16 = 10250;
    /// The wall clock at t = 0.
    const T0: u64 = 1_800_000_000;

    fn wall(t_ms: u64) -> Time {
        Time(T0 * 1_000_000 + t_ms * 1000)
    }

    /// A runtime with container `app` of pod `default/p` running `script` from t = 0.
    fn runtime(script: &str) -> SimRuntime {
        SimRuntime::with_one_container(script, wall(0))
    }

    /// A client over stack `a`: TCP to the server, std rustls on it.
    struct Client {
        tcp: Tcp,
        tls: ClientConnection,
        got: Vec<u8>,
        wire: Vec<u8>,
        ended: Option<String>,
    }

    impl Client {
        fn connect(a: &mut Stack, tls: ClientConnection) -> Client {
            let tcp = a.tcp_connect([10, 0, 0, 2], PORT).unwrap();
            Client { tcp, tls, got: Vec::new(), wire: Vec::new(), ended: None }
        }

        fn step(&mut self, a: &mut Stack) {
            if self.ended.is_some() {
                return;
            }
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.wire).unwrap();
            }
            if !self.wire.is_empty() {
                match a.tcp_send(self.tcp, &self.wire) {
                    Ok(n) => drop(self.wire.drain(..n)),
                    Err(e) => self.ended = Some(format!("tcp: {e}")),
                }
            }
            let mut buf = [0u8; 4096];
            loop {
                match a.tcp_recv(self.tcp, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut rd = &buf[..n];
                        while !rd.is_empty() {
                            self.tls.read_tls(&mut rd).unwrap();
                            if let Err(e) = self.tls.process_new_packets() {
                                self.ended = Some(format!("tls: {e}"));
                                return;
                            }
                            let mut plain = [0u8; 8192];
                            while let Ok(n) = self.tls.reader().read(&mut plain) {
                                if n == 0 {
                                    break;
                                }
                                self.got.extend_from_slice(&plain[..n]);
                            }
                        }
                    }
                    Err(_) => {
                        self.ended = Some("closed".into());
                        let _ = a.tcp_close(self.tcp);
                        return;
                    }
                }
            }
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.got).into_owned()
        }
    }

    struct Net {
        a: Stack,
        b: Stack,
        t: u64,
        server: KubeletServer,
        reports: Vec<String>,
    }

    impl Net {
        fn new(pki: &Pki) -> Net {
            let (a, mut b, _) = pair(0);
            let tls = ServerTlsConfig::new(
                pki.ca_pem.as_bytes(),
                pki.chain_pem.as_bytes(),
                pki.key_pem.as_bytes(),
                now,
                os_random,
            )
            .unwrap();
            let server = KubeletServer::new(&mut b, PORT, tls).unwrap();
            Net { a, b, t: 0, server, reports: Vec::new() }
        }

        /// Runs `ms` of simulated time (10 ms a round), the runtime moving along too.
        fn run(&mut self, rt: &mut SimRuntime, clients: &mut [&mut Client], ms: u64) {
            for _ in 0..ms / 10 {
                pump(&mut self.a, &mut self.b, &mut self.t, 1);
                rt.advance_all(wall(self.t));
                if let Some(r) = self.server.poll(&mut self.b, rt, self.t, wall(self.t)) {
                    self.reports.push(r);
                }
                for c in clients.iter_mut() {
                    c.step(&mut self.a);
                }
            }
        }

        /// One request by a certified client, answered in full within `ms`.
        fn get(&mut self, pki: &Pki, rt: &mut SimRuntime, target: &str, ms: u64) -> String {
            let mut c = Client::connect(&mut self.a, std_client(pki, Some(pki), &[&rustls::version::TLS13]));
            write!(c.tls.writer(), "GET {target} HTTP/1.1\r\nHost: node\r\n\r\n").unwrap();
            for _ in 0..ms / 100 {
                self.run(rt, &mut [&mut c], 100);
                if c.ended.is_some() {
                    break;
                }
            }
            assert_eq!(c.ended.as_deref(), Some("closed"), "{target}: {}", c.text());
            c.text()
        }
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[test]
    fn logs_and_health_are_served_to_certified_clients() {
        let pki = pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo one; echo two; exit 0");
        let all = net.get(&pki, &mut rt, "/containerLogs/default/p/app", 5_000);
        assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
        assert!(all.contains("Content-Length: 8\r\n"), "{all}");
        assert_eq!(body(&all), "one\ntwo\n");
        let tail = net.get(&pki, &mut rt, "/containerLogs/default/p/app?tailLines=1&timestamps=true", 5_000);
        assert_eq!(body(&tail), "2027-01-15T08:00:00.000000000Z two\n");
        let none = net.get(&pki, &mut rt, "/containerLogs/default/p/web", 5_000);
        assert!(none.starts_with("HTTP/1.1 404 "), "{none}");
        assert!(body(&none).contains("container \"web\" in pod \"p\""), "{none}");
        let bad = net.get(&pki, &mut rt, "/containerLogs/default/p/app?tailLines=-1", 5_000);
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let prev = net.get(&pki, &mut rt, "/containerLogs/default/p/app?previous=true", 5_000);
        assert!(prev.starts_with("HTTP/1.1 404 "), "{prev}");
        assert_eq!(body(&net.get(&pki, &mut rt, "/healthz", 5_000)), "ok");
        let other = net.get(&pki, &mut rt, "/pods", 5_000);
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        assert_eq!(net.server.counters().answered, 7);
        assert_eq!(net.server.connections(), 0, "every connection closed");
        assert!(net.reports.is_empty(), "{:?}", net.reports);
    }

    #[test]
    fn follow_streams_lines_as_they_come_and_ends_with_the_container() {
        let pki = pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo a; sleep 2; echo b; sleep 2; echo c; exit 0");
        let mut c = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS12]));
        write!(c.tls.writer(), "GET /containerLogs/default/p/app?follow=true HTTP/1.1\r\n\r\n").unwrap();
        net.run(&mut rt, &mut [&mut c], 1_000);
        let early = c.text();
        assert!(early.contains("Transfer-Encoding: chunked"), "{early}");
        assert!(early.ends_with("2\r\na\n\r\n"), "only the first line so far: {early:?}");
        assert!(c.ended.is_none());
        net.run(&mut rt, &mut [&mut c], 2_000);
        assert!(c.text().ends_with("2\r\nb\n\r\n"), "{:?}", c.text());
        net.run(&mut rt, &mut [&mut c], 3_000);
        assert!(c.text().ends_with("2\r\nc\n\r\n0\r\n\r\n"), "{:?}", c.text());
        assert_eq!(c.ended.as_deref(), Some("closed"));
    }

    #[test]
    fn clients_without_a_certificate_from_the_cluster_ca_are_refused() {
        let pki = pki(&["node.test"], false);
        let other = self::pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo secret");
        let mut anonymous = Client::connect(&mut net.a, std_client(&pki, None, &[&rustls::version::TLS13]));
        let mut stranger =
            Client::connect(&mut net.a, std_client(&pki, Some(&other), &[&rustls::version::TLS13]));
        for c in [&mut anonymous, &mut stranger] {
            write!(c.tls.writer(), "GET /containerLogs/default/p/app HTTP/1.1\r\n\r\n").unwrap();
        }
        net.run(&mut rt, &mut [&mut anonymous, &mut stranger], 3_000);
        for c in [&anonymous, &stranger] {
            assert!(c.ended.is_some(), "the connection ends");
            assert!(!c.text().contains("secret"), "{}", c.text());
        }
        assert_eq!(net.server.counters().refused, 2);
        assert!(!net.reports.is_empty() && net.reports.len() <= 2, "{:?}", net.reports);
        assert!(net.reports[0].starts_with("kubelet endpoint: refused a client: "), "{:?}", net.reports);
        // Junk instead of TLS, then a certified client is still served.
        let mut junk = Client::connect(&mut net.a, std_client(&pki, None, &[&rustls::version::TLS13]));
        net.run(&mut rt, &mut [], 200);
        net.a.tcp_send(junk.tcp, &[0x16, 3, 1, 0xff, 0xff, 1, 2, 3]).unwrap();
        net.a.tcp_send(junk.tcp, &[0xaa; 3000]).unwrap();
        net.run(&mut rt, &mut [&mut junk], 2_000);
        assert_eq!(net.server.counters().refused, 3);
        assert_eq!(body(&net.get(&pki, &mut rt, "/containerLogs/default/p/app", 5_000)), "secret\n");
    }

    #[test]
    fn slow_huge_and_wrong_requests_are_bounded() {
        let pki = pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo x");
        // A head that never ends: dropped after HEAD_MS.
        let mut slow = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
        write!(slow.tls.writer(), "GET /containerLogs/default/p/app HTTP/1.1\r\nX-A: ").unwrap();
        net.run(&mut rt, &mut [&mut slow], 2_000);
        assert!(slow.ended.is_none());
        assert_eq!(net.server.connections(), 1);
        net.run(&mut rt, &mut [&mut slow], HEAD_MS);
        assert!(slow.ended.is_some(), "dropped after {HEAD_MS} ms");
        assert_eq!(net.server.counters().timed_out, 1);
        // A head of more than MAX_HEAD bytes: 431, and not all of it is kept.
        let mut huge = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
        let filler = "a".repeat(1000);
        write!(huge.tls.writer(), "GET /healthz HTTP/1.1\r\n").unwrap();
        for i in 0..40 {
            write!(huge.tls.writer(), "X-{i}: {filler}\r\n").unwrap();
        }
        net.run(&mut rt, &mut [&mut huge], 3_000);
        assert!(huge.text().starts_with("HTTP/1.1 431 "), "{}", huge.text());
        let posted = {
            let mut c = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
            write!(
                c.tls.writer(),
                "POST /containerLogs/default/p/app HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            )
            .unwrap();
            net.run(&mut rt, &mut [&mut c], 3_000);
            c.text()
        };
        assert!(posted.starts_with("HTTP/1.1 405 ") && posted.contains("Allow: GET"), "{posted}");
        let garbled = {
            let mut c = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
            write!(c.tls.writer(), "\x01\x02 nonsense\r\n\r\n").unwrap();
            net.run(&mut rt, &mut [&mut c], 3_000);
            c.text()
        };
        assert!(garbled.starts_with("HTTP/1.1 400 "), "{garbled}");
        // RFC 9112 as the other servers read it: bare LF, another major version.
        for (request, status) in [
            ("GET /healthz HTTP/1.1\nHost: node\n\n", "400"),
            ("GET /healthz HTTP/1.1\r\nHost : node\r\n\r\n", "400"),
            ("GET /healthz HTTP/2.0\r\n\r\n", "505"),
        ] {
            let mut c = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
            c.tls.writer().write_all(request.as_bytes()).unwrap();
            net.run(&mut rt, &mut [&mut c], 3_000);
            assert!(c.text().starts_with(&format!("HTTP/1.1 {status} ")), "{request:?}: {}", c.text());
        }
        assert_eq!(net.server.connections(), 0);
    }

    #[test]
    fn connections_beyond_the_limit_are_reset_and_the_server_recovers() {
        let pki = pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo x");
        // Idle TCP connections that never start TLS hold every slot.
        let idle: Vec<Tcp> =
            (0..MAX_CONNECTIONS + 4).map(|_| net.a.tcp_connect([10, 0, 0, 2], PORT).unwrap()).collect();
        net.run(&mut rt, &mut [], 1_000);
        assert_eq!(net.server.connections(), MAX_CONNECTIONS);
        let open = idle.iter().filter(|t| net.a.tcp_state(**t) == Ok(TcpState::Open)).count();
        assert_eq!(open, MAX_CONNECTIONS, "the others were reset");
        // They time out; then the endpoint serves again.
        net.run(&mut rt, &mut [], HEAD_MS + 1_000);
        assert_eq!(net.server.connections(), 0);
        assert_eq!(net.server.counters().timed_out, MAX_CONNECTIONS as u64);
        for t in idle {
            net.a.tcp_remove(t).unwrap();
        }
        assert_eq!(body(&net.get(&pki, &mut rt, "/containerLogs/default/p/app", 5_000)), "x\n");
    }

    #[test]
    fn the_fuzz_corpora_of_requests_are_answered_or_refused() {
        let pki = pki(&["node.test"], false);
        let mut net = Net::new(&pki);
        let mut rt = runtime("echo x");
        let mut inputs = corpus("http_request");
        inputs.extend(
            corpus("log_request").into_iter().map(|t| [b"GET ", &t[..], b" HTTP/1.1\r\n\r\n"].concat()),
        );
        let count = inputs.len();
        for input in inputs {
            let mut c = Client::connect(&mut net.a, std_client(&pki, Some(&pki), &[&rustls::version::TLS13]));
            c.tls.writer().write_all(&input).unwrap();
            for _ in 0..(HEAD_MS + 2_000) / 500 {
                net.run(&mut rt, &mut [&mut c], 500);
                if c.ended.is_some() {
                    break;
                }
            }
            assert!(c.ended.is_some(), "no end for {:?}", String::from_utf8_lossy(&input));
            let text = c.text();
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 "), "{text}");
            net.a.tcp_remove(c.tcp).unwrap();
        }
        net.run(&mut rt, &mut [], LINGER_MS + 1_000);
        assert_eq!(net.server.connections(), 0, "every connection ended");
        let k = net.server.counters();
        assert_eq!(k.accepted, count as u64);
        assert!(k.answered + k.timed_out >= count as u64 - k.refused, "{k:?}");
    }
}
