//! The node's connections to image registries: kubelet-lite's registry client
//! (`kubelet_lite::registry::pull_async`) runs over these, as a future the node polls
//! between its other work. Each operation does what the socket allows now and answers
//! `Pending` otherwise, so a pull never holds the CPU while it waits for the network.
//!
//! A connection is plain TCP for registries the node's configuration lists as insecure and
//! TLS (verified against the registry CA bundle) for every other; it dials the registry's
//! configured endpoint when it has one, and resolves a host name through the stack's DNS.
//! An endpoint is a route to the registry: the certificate is verified for the registry's
//! own name, as the API server's is for `tls-server-name`.
//! Pure over a [`StackAccess`], so it is tested on the host against a second stack.
//!
//! Bounds: 30 s to connect, 30 s of silence while reading, at most [`ROUND_BYTES`] handed
//! to the client per round of polling (so one fast download cannot hold CPU 0 for long).
#![forbid(unsafe_code)]

use super::config::Ipv4;
use super::pipe::TlsPipe;
use super::stack::{NetError, Query, Stack, Tcp, TcpState};
use super::tls::{TlsConfig, TlsSession};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;
use kubelet_lite::http::{AsyncTransport, HttpError};
use kubelet_lite::registry::{Connector, Scheme};

/// How long a connection may take to open, the name lookup included.
pub const CONNECT_MS: u64 = 30_000;
/// How long a connection may stay silent while a reply is awaited.
pub const IDLE_MS: u64 = 30_000;
/// The most bytes one connection hands its reader per round of polling.
pub const ROUND_BYTES: usize = 256 * 1024;
/// The most bytes read from a socket per step.
const STEP_BYTES: usize = 64 * 1024;

/// How a connection reaches the node's stack and clock.
pub trait StackAccess: Clone {
    /// Runs `f` on the stack; `None` when it is busy or not up.
    fn with<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> Option<R>;
    /// The time in milliseconds.
    fn now_ms(&self) -> u64;
    /// Which round of polling this is (a connection hands out at most [`ROUND_BYTES`] per
    /// round).
    fn round(&self) -> u64;
    /// Gives a socket back (from a dropped connection), now or when the stack is free.
    fn release(&self, t: Tcp);
}

/// Opens connections to registries, as the node's configuration says.
pub struct RegistryConnector<A> {
    access: A,
    endpoints: BTreeMap<String, String>,
    tls: Option<TlsConfig>,
}

impl<A: StackAccess + Clone> RegistryConnector<A> {
    /// A connector dialing `endpoints` (registry → `HOST:PORT`) for the registries they
    /// name, verifying HTTPS registries with `tls` (none: only plain HTTP ones are reached).
    pub fn new(access: A, endpoints: BTreeMap<String, String>, tls: Option<TlsConfig>) -> Self {
        RegistryConnector { access, endpoints, tls }
    }
}

/// Splits `name[:port]`.
fn host_port(host: &str, default: u16) -> Result<(String, u16), HttpError> {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| (name.to_string(), p))
            .ok_or_else(|| HttpError::Transport(format!("bad port in {host:?}"))),
        _ if !host.is_empty() => Ok((host.to_string(), default)),
        _ => Err(HttpError::Transport(String::from("no host"))),
    }
}

/// An IPv4 literal.
fn ipv4(s: &str) -> Option<Ipv4> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl<A: StackAccess + Clone> Connector for RegistryConnector<A> {
    type Conn = RegistryConn<A>;

    fn open(&mut self, scheme: Scheme, host: &str) -> Result<RegistryConn<A>, HttpError> {
        let dial = self.endpoints.get(host).map(String::as_str).unwrap_or(host);
        let default = if scheme == Scheme::Https { 443 } else { 80 };
        let (name, port) = host_port(dial, default)?;
        let (tls_name, _) = host_port(host, default)?;
        let tls = match scheme {
            Scheme::Http => None,
            Scheme::Https => Some(self.tls.clone().ok_or_else(|| {
                HttpError::Transport(format!(
                    "{host} is reached over HTTPS and the node has no CA bundle for registries \
                     (registries.certificateAuthority), nor does it list {host} as insecure"
                ))
            })?),
        };
        Ok(RegistryConn {
            access: self.access.clone(),
            name,
            tls_name,
            port,
            tls_config: tls,
            phase: Phase::Idle,
            started_ms: 0,
            last_ms: 0,
            tls: None,
            pipe: TlsPipe::default(),
            out: Vec::new(),
            inbuf: Vec::new(),
            tcp_closed: false,
            round: (0, 0),
        })
    }
}

enum Phase {
    Idle,
    Resolving(Query),
    Opening(Tcp),
    Open(Tcp),
    Failed(String),
}

/// One connection to a registry (or its token server).
pub struct RegistryConn<A: StackAccess> {
    access: A,
    /// The host dialled.
    name: String,
    /// The name the certificate must carry: the registry's.
    tls_name: String,
    port: u16,
    tls_config: Option<TlsConfig>,
    phase: Phase,
    started_ms: u64,
    last_ms: u64,
    tls: Option<TlsSession>,
    pipe: TlsPipe,
    /// Plain bytes for the socket (plain HTTP).
    out: Vec<u8>,
    /// Bytes received and not yet read.
    inbuf: Vec<u8>,
    tcp_closed: bool,
    /// (round, bytes handed out in it).
    round: (u64, usize),
}

impl<A: StackAccess> RegistryConn<A> {
    /// Ends the connection with `why`: its socket goes back to `s` at once.
    fn fail(&mut self, s: &mut Stack, why: String) -> HttpError {
        if let Phase::Opening(t) | Phase::Open(t) =
            core::mem::replace(&mut self.phase, Phase::Failed(why.clone()))
        {
            let _ = s.tcp_remove(t);
        }
        HttpError::Transport(why)
    }

    fn close_socket(&mut self) {
        if let Phase::Opening(t) | Phase::Open(t) = core::mem::replace(&mut self.phase, Phase::Idle) {
            self.access.release(t);
        }
    }

    /// One step of opening: the lookup, the connection, the TLS session.
    fn connect_step(&mut self, s: &mut Stack, now: u64) -> Poll<Result<(), HttpError>> {
        if now.saturating_sub(self.started_ms) > CONNECT_MS {
            let why = format!("no connection to {}:{} within {} s", self.name, self.port, CONNECT_MS / 1000);
            return Poll::Ready(Err(self.fail(s, why)));
        }
        loop {
            match &self.phase {
                Phase::Failed(why) => return Poll::Ready(Err(HttpError::Transport(why.clone()))),
                Phase::Open(_) => return Poll::Ready(Ok(())),
                Phase::Idle => {
                    let addr = match ipv4(&self.name) {
                        Some(a) => a,
                        None => match s.resolve(&self.name) {
                            Ok(q) => {
                                self.phase = Phase::Resolving(q);
                                continue;
                            }
                            Err(e) => {
                                let why = format!("cannot look up {}: {e}", self.name);
                                return Poll::Ready(Err(self.fail(s, why)));
                            }
                        },
                    };
                    match s.tcp_connect(addr, self.port) {
                        Ok(t) => self.phase = Phase::Opening(t),
                        Err(e) => {
                            let why = format!("connecting to {}:{}: {e}", self.name, self.port);
                            return Poll::Ready(Err(self.fail(s, why)));
                        }
                    }
                }
                Phase::Resolving(q) => match s.resolved(*q) {
                    Ok(None) => return Poll::Pending,
                    Ok(Some(addr)) => match s.tcp_connect(addr, self.port) {
                        Ok(t) => self.phase = Phase::Opening(t),
                        Err(e) => {
                            let why = format!("connecting to {}:{}: {e}", self.name, self.port);
                            return Poll::Ready(Err(self.fail(s, why)));
                        }
                    },
                    Err(e) => {
                        let why = format!("cannot look up {}: {e}", self.name);
                        return Poll::Ready(Err(self.fail(s, why)));
                    }
                },
                Phase::Opening(t) => {
                    let t = *t;
                    match s.tcp_state(t) {
                        Ok(TcpState::Opening) => return Poll::Pending,
                        Ok(TcpState::Open | TcpState::PeerClosed) => {
                            if let Some(cfg) = &self.tls_config {
                                match TlsSession::new(cfg, &self.tls_name) {
                                    Ok(session) => self.tls = Some(session),
                                    Err(e) => return Poll::Ready(Err(self.fail(s, format!("TLS: {e}")))),
                                }
                            }
                            self.phase = Phase::Open(t);
                            self.last_ms = now;
                        }
                        Ok(TcpState::Closed) | Err(_) => {
                            let why = format!("{}:{} refused the connection", self.name, self.port);
                            return Poll::Ready(Err(self.fail(s, why)));
                        }
                    }
                }
            }
        }
    }

    /// Moves bytes both ways; an error ends the connection.
    fn pump(&mut self, s: &mut Stack, t: Tcp) -> Result<(), HttpError> {
        match self.tls.as_mut() {
            Some(tls) => {
                self.pipe.transmit(s, t, tls).map_err(|e| HttpError::Transport(format!("{e}")))?;
                let closed = self
                    .pipe
                    .receive(s, t, tls, STEP_BYTES)
                    .map_err(|e| HttpError::Transport(format!("{e}")))?;
                self.tcp_closed |= closed;
                tls.read(&mut self.inbuf).map_err(|e| HttpError::Transport(format!("TLS: {e}")))?;
                // The handshake's answer, if reading produced one.
                self.pipe.transmit(s, t, tls).map_err(|e| HttpError::Transport(format!("{e}")))?;
            }
            None => {
                if !self.out.is_empty() {
                    let n = s
                        .tcp_send(t, &self.out)
                        .map_err(|_| HttpError::Transport("connection reset".into()))?;
                    self.out.drain(..n);
                }
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < STEP_BYTES {
                    match s.tcp_recv(t, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            read += n;
                            self.inbuf.extend_from_slice(&buf[..n]);
                        }
                        Err(NetError::Closed) => {
                            self.tcp_closed = true;
                            break;
                        }
                        Err(_) => return Err(HttpError::Transport("connection reset".into())),
                    }
                }
            }
        }
        Ok(())
    }

    fn ended(&self) -> bool {
        match &self.tls {
            Some(tls) => tls.peer_closed() || (self.tcp_closed && !self.pipe.has_received()),
            None => self.tcp_closed,
        }
    }

    /// One step of a read: bytes into `buf`, 0 at the end, or `Pending`.
    fn read_step(
        &mut self,
        s: &mut Stack,
        now: u64,
        round: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, HttpError>> {
        let t = match &self.phase {
            Phase::Open(t) => *t,
            Phase::Failed(why) => return Poll::Ready(Err(HttpError::Transport(why.clone()))),
            _ => return Poll::Ready(Err(HttpError::Transport("not connected".into()))),
        };
        if self.round.0 != round {
            self.round = (round, 0);
        }
        if self.round.1 >= ROUND_BYTES {
            return Poll::Pending;
        }
        if self.inbuf.is_empty() {
            if let Err(e) = self.pump(s, t) {
                let why = format!("{}:{}: {e}", self.name, self.port);
                return Poll::Ready(Err(self.fail(s, why)));
            }
        }
        if !self.inbuf.is_empty() {
            let n = self.inbuf.len().min(buf.len()).min(ROUND_BYTES - self.round.1);
            buf[..n].copy_from_slice(&self.inbuf[..n]);
            self.inbuf.drain(..n);
            self.round.1 += n;
            self.last_ms = now;
            return Poll::Ready(Ok(n));
        }
        if self.ended() {
            return Poll::Ready(Ok(0));
        }
        if now.saturating_sub(self.last_ms) > IDLE_MS {
            let why = format!("{}:{} sent nothing for {} s", self.name, self.port, IDLE_MS / 1000);
            return Poll::Ready(Err(self.fail(s, why)));
        }
        Poll::Pending
    }

    /// Queues `buf` for the socket and sends what it takes now.
    fn write_step(&mut self, s: &mut Stack, buf: &[u8]) -> Result<(), HttpError> {
        let t = match &self.phase {
            Phase::Open(t) => *t,
            Phase::Failed(why) => return Err(HttpError::Transport(why.clone())),
            _ => return Err(HttpError::Transport("not connected".into())),
        };
        match self.tls.as_mut() {
            Some(tls) => {
                let mut at = 0;
                while at < buf.len() {
                    match tls.write(&buf[at..]) {
                        Ok(0) => {
                            return Err(HttpError::Transport("the request is larger than TLS queues".into()))
                        }
                        Ok(n) => at += n,
                        Err(e) => return Err(HttpError::Transport(format!("TLS: {e}"))),
                    }
                }
            }
            None => self.out.extend_from_slice(buf),
        }
        self.pump(s, t)
    }
}

impl<A: StackAccess> AsyncTransport for RegistryConn<A> {
    async fn connect(&mut self) -> Result<(), HttpError> {
        self.close_socket();
        self.tls = None;
        self.pipe = TlsPipe::default();
        self.out.clear();
        self.inbuf.clear();
        self.tcp_closed = false;
        self.started_ms = self.access.now_ms();
        poll_fn(|_| {
            let now = self.access.now_ms();
            let access = self.access.clone();
            access.with(|s| self.connect_step(s, now)).unwrap_or(Poll::Pending)
        })
        .await
    }

    async fn write_all(&mut self, buf: &[u8]) -> Result<(), HttpError> {
        poll_fn(|_| {
            let access = self.access.clone();
            match access.with(|s| self.write_step(s, buf)) {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            }
        })
        .await
    }

    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        poll_fn(|_| {
            let (now, round) = (self.access.now_ms(), self.access.round());
            let access = self.access.clone();
            access.with(|s| self.read_step(s, now, round, buf)).unwrap_or(Poll::Pending)
        })
        .await
    }
}

impl<A: StackAccess> Drop for RegistryConn<A> {
    fn drop(&mut self) {
        self.close_socket();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::stack::testnet::pair;
    use alloc::rc::Rc;
    use core::cell::RefCell;
    use core::future::Future;
    use core::task::{Context, Waker};
    use kubelet_lite::http::{AsyncStream, Limits, Method, Request};

    struct Net {
        a: Stack,
        b: Stack,
        t: u64,
        round: u64,
        released: usize,
    }

    /// The client's stack `a`, cabled to the server's stack `b`.
    #[derive(Clone)]
    struct Shared(Rc<RefCell<Net>>);

    impl StackAccess for Shared {
        fn with<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
            Some(f(&mut self.0.borrow_mut().a))
        }
        fn now_ms(&self) -> u64 {
            self.0.borrow().t
        }
        fn round(&self) -> u64 {
            self.0.borrow().round
        }
        fn release(&self, t: Tcp) {
            let mut n = self.0.borrow_mut();
            n.released += 1;
            let _ = n.a.tcp_remove(t);
        }
    }

    fn shared() -> Shared {
        let (a, b, _) = pair(0);
        Shared(Rc::new(RefCell::new(Net { a, b, t: 0, round: 0, released: 0 })))
    }

    /// Polls a GET of `/v2/` to 10.0.0.2:80 through a connector, with `serve` answering on
    /// the server's stack after every poll; returns the outcome, its body, and the number of
    /// polls.
    fn get(
        net: &Shared,
        host: &str,
        endpoints: BTreeMap<String, String>,
        serve: impl FnMut(&mut Net),
        max_polls: usize,
    ) -> (Result<(u16, Vec<u8>), HttpError>, usize) {
        fetch(net, Scheme::Http, None, host, endpoints, serve, max_polls)
    }

    /// [`get`] over `scheme`, HTTPS verified with `tls`.
    fn fetch(
        net: &Shared,
        scheme: Scheme,
        tls: Option<TlsConfig>,
        host: &str,
        endpoints: BTreeMap<String, String>,
        mut serve: impl FnMut(&mut Net),
        max_polls: usize,
    ) -> (Result<(u16, Vec<u8>), HttpError>, usize) {
        let mut c = RegistryConnector::new(net.clone(), endpoints, tls);
        let run = async {
            let mut conn = c.open(scheme, host)?;
            let req = Request::new(Method::Get, "/v2/".into());
            let limits = Limits { max_body_bytes: 1 << 20, ..Limits::default() };
            let mut stream = AsyncStream::open(&mut conn, host, None, &req, limits).await?;
            let mut body = Vec::new();
            while let Some(b) = stream.next_bytes().await? {
                body.extend_from_slice(&b);
            }
            Ok((stream.status, body))
        };
        let mut run = core::pin::pin!(run);
        let mut cx = Context::from_waker(Waker::noop());
        for polls in 1..=max_polls {
            if let Poll::Ready(r) = run.as_mut().poll(&mut cx) {
                return (r, polls);
            }
            let mut n = net.0.borrow_mut();
            n.round += 1;
            n.t += 10;
            let t = n.t;
            n.a.poll(t);
            n.b.poll(t);
            serve(&mut n);
        }
        panic!("no outcome in {max_polls} polls");
    }

    /// A server on 10.0.0.2:80 that answers the first request with `reply` and closes.
    fn server(net: &Shared, reply: Vec<u8>) -> impl FnMut(&mut Net) {
        let l = net.0.borrow_mut().b.tcp_listen(80).unwrap();
        let (mut head, mut at, mut closed) = (Vec::new(), 0, false);
        move |n: &mut Net| {
            let mut buf = [0u8; 4096];
            while let Ok(k) = n.b.tcp_recv(l, &mut buf) {
                if k == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..k]);
            }
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                while at < reply.len() {
                    match n.b.tcp_send(l, &reply[at..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => at += k,
                    }
                }
                if at == reply.len() && !closed {
                    closed = n.b.tcp_close(l).is_ok();
                }
            }
        }
    }

    #[test]
    fn a_plain_http_exchange_waits_for_the_network_and_hands_out_bounded_rounds() {
        let net = shared();
        let body = vec![b'x'; 700 * 1024];
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        let serve = server(&net, reply);
        let (r, polls) = get(&net, "10.0.0.2", BTreeMap::new(), serve, 200_000);
        let (status, got) = r.unwrap();
        assert_eq!((status, got.len()), (200, body.len()));
        // At most ROUND_BYTES per round: 700 KiB takes at least three rounds.
        assert!(polls >= 3, "{polls} polls");
        assert_eq!(net.0.borrow().released, 1, "the socket is given back");
        assert_eq!(net.0.borrow().a.tcp_sockets(), 0);
    }

    #[test]
    fn an_endpoint_is_dialled_for_its_registry() {
        let net = shared();
        let serve = server(&net, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec());
        let mut endpoints = BTreeMap::new();
        endpoints.insert("127.0.0.1:5000".to_string(), "10.0.0.2:80".to_string());
        let (r, _) = get(&net, "127.0.0.1:5000", endpoints, serve, 100_000);
        assert_eq!(r.unwrap(), (200, b"{}".to_vec()));
    }

    #[test]
    fn refusals_silence_and_bad_names_are_errors() {
        // Nothing listens on port 80.
        let net = shared();
        let (r, _) = get(&net, "10.0.0.2", BTreeMap::new(), |_| {}, 100_000);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
        // A server that accepts and never answers: the idle bound ends it.
        let net = shared();
        let l = net.0.borrow_mut().b.tcp_listen(80).unwrap();
        let (r, _) = get(
            &net,
            "10.0.0.2",
            BTreeMap::new(),
            |n| {
                n.t += 1000;
                let _ = n.b.tcp_state(l);
            },
            100_000,
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("sent nothing for 30 s"), "{e}");
        assert_eq!(net.0.borrow().a.tcp_sockets(), 0, "the socket is given back");
        // A name that the client stack's DNS server (10.0.0.53, which is not there) never finds.
        let net = shared();
        let (r, _) = get(&net, "registry.test", BTreeMap::new(), |n| n.t += 1000, 100_000);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("cannot look up registry.test"), "{e}");
        // HTTPS without a CA bundle.
        let mut c = RegistryConnector::new(shared(), BTreeMap::new(), None);
        let Err(HttpError::Transport(why)) = c.open(Scheme::Https, "registry.test") else { panic!() };
        assert!(why.contains("no CA bundle"), "{why}");
        assert!(c.open(Scheme::Http, "10.0.0.2:0").is_err());
        assert_eq!(ipv4("10.0.2.100"), Some([10, 0, 2, 100]));
        for bad in ["10.0.2", "10.0.2.256", "a.b.c.d", "1.2.3.4.5", ""] {
            assert_eq!(ipv4(bad), None, "{bad}");
        }
    }

    /// A TLS registry on 10.0.2.2:443 whose certificate is for `registry.test`, reached
    /// through an endpoint: the client verifies the registry's name, not the endpoint's.
    fn tls_get(cert_names: &[&str], ca_of: &str) -> Result<(u16, Vec<u8>), HttpError> {
        use crate::net::tls::testpki::{now, os_random, pki};
        use rustls::ServerConnection;
        use std::io::{Read, Write};
        let server_pki = pki(cert_names, false);
        let ca = if ca_of == "server" { server_pki.ca_pem.clone() } else { pki(&["other"], false).ca_pem };
        let provider = alloc::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(server_pki.chain.clone(), server_pki.key.clone_key())
            .unwrap();
        let mut server = ServerConnection::new(alloc::sync::Arc::new(cfg)).unwrap();
        let net = shared();
        let l = net.0.borrow_mut().b.tcp_listen(443).unwrap();
        let tls = TlsConfig::new(ca.as_bytes(), now, os_random).unwrap();
        let mut endpoints = BTreeMap::new();
        endpoints.insert("registry.test".to_string(), "10.0.0.2:443".to_string());
        let mut answered = false;
        let serve = |n: &mut Net| {
            let mut buf = [0u8; 4096];
            while let Ok(k) = n.b.tcp_recv(l, &mut buf) {
                if k == 0 {
                    break;
                }
                let mut rd = &buf[..k];
                while !rd.is_empty() {
                    if server.read_tls(&mut rd).is_err() || server.process_new_packets().is_err() {
                        break;
                    }
                }
            }
            let mut got = [0u8; 1024];
            if !answered && server.reader().read(&mut got).is_ok_and(|k| k > 0) {
                answered = true;
                server.writer().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
                server.send_close_notify();
            }
            let mut out = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut out).unwrap();
            }
            let mut at = 0;
            while at < out.len() {
                match n.b.tcp_send(l, &out[at..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => at += k,
                }
            }
        };
        fetch(&net, Scheme::Https, Some(tls), "registry.test", endpoints, serve, 100_000).0
    }

    #[test]
    fn an_https_registry_is_verified_for_its_own_name_through_its_endpoint() {
        assert_eq!(tls_get(&["registry.test"], "server").unwrap(), (200, b"{}".to_vec()));
        let e = tls_get(&["10.0.0.2"], "server").unwrap_err().to_string();
        assert!(e.contains("TLS"), "a certificate for the endpoint, not the registry: {e}");
        let e = tls_get(&["registry.test"], "other").unwrap_err().to_string();
        assert!(e.contains("TLS"), "a certificate of another CA: {e}");
    }
}
