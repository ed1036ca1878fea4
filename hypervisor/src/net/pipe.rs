//! The bytes between one TCP socket and one TLS session, both ways, bounded: what the node's
//! HTTPS client (`https`) and its kubelet endpoint (`kubelet`) share. Pure.
#![forbid(unsafe_code)]

use super::stack::{NetError, Stack, Tcp};
use super::tls::{Role, Session, TlsError};
use alloc::vec::Vec;

/// Why the connection under a pipe failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PipeError {
    /// The socket was reset or refused, or is gone.
    Reset(NetError),
    /// The TLS session failed.
    Tls(TlsError),
}

impl core::fmt::Display for PipeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PipeError::Reset(_) => f.write_str("connection refused or reset"),
            PipeError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// Received bytes TLS has not taken yet, and TLS output TCP has not taken yet.
#[derive(Debug, Default)]
pub struct TlsPipe {
    from_tcp: Vec<u8>,
    to_tcp: Vec<u8>,
}

impl TlsPipe {
    /// Reads what has arrived (at most `max` bytes, and no more while `max` wait) and hands
    /// it to the session. Ok(true) once the peer has closed its side of the TCP connection.
    pub fn receive<C: Role>(
        &mut self,
        s: &mut Stack,
        t: Tcp,
        tls: &mut Session<C>,
        max: usize,
    ) -> Result<bool, PipeError> {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        let mut closed = false;
        while read < max && self.from_tcp.len() < max {
            match s.tcp_recv(t, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    read += n;
                    self.from_tcp.extend_from_slice(&buf[..n]);
                }
                Err(NetError::Closed) => {
                    closed = true;
                    break;
                }
                Err(e) => return Err(PipeError::Reset(e)),
            }
        }
        if !self.from_tcp.is_empty() {
            let n = tls.feed(&self.from_tcp).map_err(PipeError::Tls)?;
            self.from_tcp.drain(..n);
        }
        Ok(closed)
    }

    /// Sends what the session has for the peer, as much as the socket takes; the count sent.
    pub fn transmit<C: Role>(
        &mut self,
        s: &mut Stack,
        t: Tcp,
        tls: &mut Session<C>,
    ) -> Result<usize, PipeError> {
        tls.take_outgoing(&mut self.to_tcp);
        if self.to_tcp.is_empty() {
            return Ok(0);
        }
        let n = s.tcp_send(t, &self.to_tcp).map_err(PipeError::Reset)?;
        self.to_tcp.drain(..n);
        Ok(n)
    }

    /// Whether received bytes still wait for the session.
    pub fn has_received(&self) -> bool {
        !self.from_tcp.is_empty()
    }

    /// Whether bytes still wait for the socket.
    pub fn has_unsent(&self) -> bool {
        !self.to_tcp.is_empty()
    }
}
