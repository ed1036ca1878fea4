//! One HTTPS exchange over the node's stack: a fresh TCP connection, a verified TLS
//! session on it, one request (with `Connection: close`), and the response as it arrives,
//! decoded by kubelet-lite's bounded response parser (whole, or a stream such as a watch).
//! Pure: driven by [`Exchange::pump`] between polls of the stack.
#![forbid(unsafe_code)]

use super::config::Ipv4;
use super::stack::{NetError, Stack, Tcp};
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
    to_tcp: Vec<u8>,
    from_tcp: Vec<u8>,
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
            to_tcp: Vec::new(),
            from_tcp: Vec::new(),
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
        self.tls.take_outgoing(&mut self.to_tcp);
        if !self.to_tcp.is_empty() {
            match s.tcp_send(t, &self.to_tcp) {
                Ok(n) => drop(self.to_tcp.drain(..n)),
                Err(_) => return self.fail(String::from("connection refused or reset")),
            }
        }
        let mut buf = [0u8; 4096];
        // A bounded number of reads per pump, so one busy connection cannot hold the CPU.
        for _ in 0..16 {
            match s.tcp_recv(t, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.from_tcp.extend_from_slice(&buf[..n]),
                Err(NetError::Closed) => {
                    self.tcp_closed = true;
                    break;
                }
                Err(e) => return self.fail(format!("{e}")),
            }
            if self.from_tcp.len() >= 64 * 1024 {
                break;
            }
        }
        if !self.from_tcp.is_empty() {
            match self.tls.feed(&self.from_tcp) {
                Ok(n) => drop(self.from_tcp.drain(..n)),
                Err(e) => return self.fail(format!("TLS: {e}")),
            }
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
        let ended = self.tls.peer_closed() || (self.tcp_closed && self.from_tcp.is_empty());
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
