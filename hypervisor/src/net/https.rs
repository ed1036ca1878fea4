//! One HTTPS exchange over the node's stack: a fresh TCP connection, a verified TLS
//! session on it, one request (with `Connection: close`), and the response as it arrives,
//! decoded by kubelet-lite's bounded response parser (whole, or a stream such as a watch).
//! Pure: driven by [`Exchange::pump`] between polls of the stack.
#![forbid(unsafe_code)]

use super::config::Ipv4;
use super::pipe::TlsPipe;
use super::stack::{Stack, Tcp};
use super::tls::{TlsConfig, TlsSession};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kubelet_lite::http::{Limits, ResponseParser};

/// Where an exchange stands after a pump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still going: call [`Exchange::pump`] again after the next poll.
    Pending,
    /// The response is complete by its framing, or the server closed the connection.
    Done,
    /// It failed; the reason.
    Failed(String),
}

/// An HTTPS request and its response.
pub struct Exchange {
    tcp: Option<Tcp>,
    tls: TlsSession,
    pipe: TlsPipe,
    plain: Vec<u8>,
    parser: ResponseParser,
    tcp_closed: bool,
    failed: Option<String>,
}

impl Exchange {
    /// Connects to `addr:port`, starts TLS verifying `name`, and queues `request` (its
    /// bytes on the wire, e.g. from `kubelet_lite::http::Request::encode`).
    pub fn start(
        s: &mut Stack,
        tls: &TlsConfig,
        addr: Ipv4,
        port: u16,
        name: &str,
        request: &[u8],
        limits: Limits,
    ) -> Result<Exchange, String> {
        let mut session = TlsSession::new(tls, name).map_err(|e| format!("TLS: {e}"))?;
        let mut at = 0;
        while at < request.len() {
            match session.write(&request[at..]) {
                Ok(0) => return Err(String::from("the request is larger than a TLS session queues")),
                Ok(n) => at += n,
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
        let tcp = s.tcp_connect(addr, port).map_err(|e| format!("{e}"))?;
        Ok(Exchange {
            tcp: Some(tcp),
            tls: session,
            pipe: TlsPipe::default(),
            plain: Vec::new(),
            parser: ResponseParser::new(limits),
            tcp_closed: false,
            failed: None,
        })
    }

    fn fail(&mut self, why: String) -> Progress {
        self.failed = Some(why.clone());
        Progress::Failed(why)
    }

    /// Moves bytes between the socket, TLS and the response parser.
    pub fn pump(&mut self, s: &mut Stack) -> Progress {
        if let Some(why) = &self.failed {
            return Progress::Failed(why.clone());
        }
        let Some(t) = self.tcp else { return Progress::Done };
        if let Err(e) = self.pipe.transmit(s, t, &mut self.tls) {
            return self.fail(format!("{e}"));
        }
        // A bounded read per pump, so one busy connection cannot hold the CPU.
        match self.pipe.receive(s, t, &mut self.tls, 64 * 1024) {
            Ok(closed) => self.tcp_closed |= closed,
            Err(e) => return self.fail(format!("{e}")),
        }
        if let Err(e) = self.tls.read(&mut self.plain) {
            return self.fail(format!("TLS: {e}"));
        }
        if !self.plain.is_empty() {
            let plain = core::mem::take(&mut self.plain);
            if let Err(e) = self.parser.feed(&plain) {
                return self.fail(format!("HTTP: {e}"));
            }
        }
        if self.parser.is_complete() {
            return Progress::Done;
        }
        let ended = self.tls.peer_closed() || (self.tcp_closed && !self.pipe.has_received());
        if ended {
            if self.parser.head().is_none() {
                let why = if self.tls.is_handshaking() {
                    "the connection closed during the TLS handshake"
                } else {
                    "the server closed without answering"
                };
                return self.fail(String::from(why));
            }
            if let Err(e) = self.parser.finish() {
                return self.fail(format!("HTTP: {e}"));
            }
            return Progress::Done;
        }
        Progress::Pending
    }

    /// The response status, once the head has arrived.
    pub fn status(&self) -> Option<u16> {
        self.parser.head().map(|h| h.status)
    }

    /// The negotiated TLS version, once known.
    pub fn protocol_version(&self) -> Option<&'static str> {
        self.tls.protocol_version()
    }

    /// Takes the body bytes decoded so far.
    pub fn take_body(&mut self) -> Vec<u8> {
        self.parser.take_body()
    }

    /// Ends the exchange: the socket is reset if still open and forgotten.
    pub fn close(mut self, s: &mut Stack) {
        if let Some(t) = self.tcp.take() {
            let _ = s.tcp_remove(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::stack::testnet::{corpus, pair, pump};
    use crate::net::stack::TcpState;
    use crate::net::tls::testpki::{now, os_random, pki, Pki};
    use rustls::ServerConnection;
    use std::io::{Read, Write};

    /// Answers one HTTPS request on stack `b` with `answer`, then closes; the client's
    /// exchange on stack `a` must end (done or failed) without panicking. Returns how it ended.
    fn answer_with(pki: &Pki, answer: &[u8]) -> (Progress, Option<u16>, usize) {
        let (mut a, mut b, _) = pair(0);
        let provider = alloc::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap();
        let mut server = ServerConnection::new(alloc::sync::Arc::new(cfg)).unwrap();
        server.set_buffer_limit(None);
        let listener = b.tcp_listen(443).unwrap();
        let tls = TlsConfig::new(pki.ca_pem.as_bytes(), now, os_random).unwrap();
        let request = b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: api.test\r\n\r\n";
        let limits = Limits { max_head_bytes: 4096, max_body_bytes: 64 * 1024, max_line_bytes: 4096 };
        let mut x = Exchange::start(&mut a, &tls, [10, 0, 0, 2], 443, "api.test", request, limits).unwrap();
        let (mut t, mut answered, mut body) = (0, false, 0);
        let mut buf = [0u8; 4096];
        for _ in 0..5_000 {
            pump(&mut a, &mut b, &mut t, 1);
            if let Ok(n) = b.tcp_recv(listener, &mut buf) {
                let mut rd = &buf[..n];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).unwrap();
                    if server.process_new_packets().is_err() {
                        break;
                    }
                }
            }
            let mut got = [0u8; 1024];
            if !answered && server.reader().read(&mut got).is_ok_and(|n| n > 0) {
                answered = true;
                server.writer().write_all(answer).unwrap();
                server.send_close_notify();
            }
            let mut out = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut out).unwrap();
            }
            let mut at = 0;
            while at < out.len() {
                match b.tcp_send(listener, &out[at..]) {
                    Ok(0) => pump(&mut a, &mut b, &mut t, 1),
                    Ok(n) => at += n,
                    Err(_) => break,
                }
            }
            if answered && !server.wants_write() && b.tcp_state(listener) == Ok(TcpState::Open) {
                let _ = b.tcp_close(listener);
            }
            let p = x.pump(&mut a);
            body += x.take_body().len();
            assert!(body <= limits.max_body_bytes, "the body exceeds its limit");
            if p != Progress::Pending {
                let status = x.status();
                x.close(&mut a);
                return (p, status, body);
            }
        }
        panic!("the exchange did not end on {:?}", String::from_utf8_lossy(&answer[..answer.len().min(200)]));
    }

    #[test]
    fn the_fuzz_corpora_of_replies_go_through_the_kernel_transport() {
        let pki = pki(&["api.test"], false);
        let (mut done, mut failed) = (0, 0);
        for name in ["http_response", "watch_lines", "agent_replies"] {
            for input in corpus(name) {
                match answer_with(&pki, &input) {
                    (Progress::Done, _, _) => done += 1,
                    (Progress::Failed(why), _, _) => {
                        assert!(!why.is_empty());
                        failed += 1
                    }
                    (Progress::Pending, _, _) => unreachable!(),
                }
            }
        }
        // Each input ended, one way or the other (the corpora are raw bytes for their parsers,
        // so most are not well-formed replies here).
        assert!(done + failed >= 3 * 7, "{done} done, {failed} failed");
        // A whole answer arrives and is parsed.
        let (p, status, body) = answer_with(&pki, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((p, status, body), (Progress::Done, Some(200), 5));
        // A body longer than its limit fails rather than grows.
        let mut huge = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        huge.resize(huge.len() + 100_000, b'x');
        assert!(matches!(answer_with(&pki, &huge).0, Progress::Failed(_)));
    }
}
