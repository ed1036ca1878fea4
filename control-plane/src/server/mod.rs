//! The HTTP(S) server: one thread per connection, HTTP/1.1 keep-alive, TLS through rustls,
//! bearer-token authentication, then the REST API.
//!
//! Every connection is bounded ([`Limits`]): there are at most `max_connections` of them, and
//! `max_connections_per_client` from one IP address (a watch holds its connection for as long
//! as it runs, so it counts as one); one over either cap is answered 429 within a second by a
//! few refusing threads (or closed at once when they are all busy), and never takes a slot.
//! A connection has `read_header_timeout` from being accepted (TLS handshake included), or
//! from the first byte of a later request, to a complete head, then `request_timeout` for
//! its body; a slow head or body is answered 408 and closed. An idle keep-alive connection is
//! closed after `idle_timeout`, and a write that makes no progress for `request_timeout`
//! (a client that stopped reading, a watch included) ends the connection. What one request
//! holds is bounded in [`http`], and nothing is kept once its connection closes.

pub mod http;
pub mod logs;

use crate::api::status::ApiError;
use crate::api::{Api, Reply};
use crate::auth::Tokens;
use http::{write_response, HttpError, Request};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How the control plane is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state directory (store log, pki, tokens, kubeconfigs).
    pub dir: PathBuf,
    /// The listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS.
    pub insecure_http: bool,
    /// Nodes to issue credentials for (`--node NAME`); the first one's is `DIR/node.kubeconfig`.
    pub nodes: Vec<String>,
    /// The CA bundle that kubelets' serving certificates must chain to
    /// (`--kubelet-certificate-authority FILE`); `None` takes any (kube-apiserver's default).
    pub kubelet_ca: Option<PathBuf>,
    /// The store's bounds (`--event-ttl`, `--history-bytes`, ...).
    pub store: crate::store::Limits,
    /// Bounds on connections.
    pub limits: Limits,
}

/// Bounds on the server's connections (flags in [`Limits::FLAGS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once (`--max-connections`, 1024).
    pub max_connections: usize,
    /// Connections at once from one client IP address (`--max-connections-per-client`, 128).
    pub max_connections_per_client: usize,
    /// From a connection, or the first byte of a request, to its complete head
    /// (`--read-header-timeout`, 32 s as kube-apiserver's `ReadHeaderTimeout`).
    pub read_header_timeout: Duration,
    /// From a complete head to the end of its body, and the longest a write may make no
    /// progress (`--request-timeout`, 60 s as kube-apiserver's flag).
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (`--idle-timeout`, 90 s
    /// as kube-apiserver's `IdleTimeout`).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_client: 128,
            read_header_timeout: Duration::from_secs(32),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl Limits {
    /// The command-line flags that set the limits, each followed by its value: a count, or a
    /// positive duration as Go writes one (`60s`, `500ms`, `2m`, `1h30m`).
    pub const FLAGS: [&'static str; 5] = [
        "--max-connections",
        "--max-connections-per-client",
        "--read-header-timeout",
        "--request-timeout",
        "--idle-timeout",
    ];

    /// Sets the limit of `flag` (one of [`Limits::FLAGS`]) from `value`.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        let count = || value.parse::<usize>().ok().filter(|n| *n > 0);
        let parse_duration = |v: &str| crate::store::parse_duration(v).filter(|d| !d.is_zero());
        let bad = || format!("{flag}: invalid value {value:?}");
        match flag {
            "--max-connections" => self.max_connections = count().ok_or_else(bad)?,
            "--max-connections-per-client" => self.max_connections_per_client = count().ok_or_else(bad)?,
            "--read-header-timeout" => self.read_header_timeout = parse_duration(value).ok_or_else(bad)?,
            "--request-timeout" => self.request_timeout = parse_duration(value).ok_or_else(bad)?,
            "--idle-timeout" => self.idle_timeout = parse_duration(value).ok_or_else(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
        Ok(())
    }
}

/// Why the control plane could not start.
#[derive(Debug)]
pub enum StartError {
    /// The directory, the store or the socket.
    Io(io::Error),
    /// Certificates.
    Tls(crate::tls::TlsError),
    /// Creating the system namespaces.
    Store(crate::store::StoreError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A bound, ready control plane.
pub struct Server {
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    tokens: Arc<Tokens>,
    api: Arc<Api>,
    /// How to reach kubelets (for `pods/log`).
    kubelet_tls: Arc<rustls::ClientConfig>,
    /// The URL clients use.
    pub url: String,
}

impl Server {
    /// Opens the store, prepares certificates, tokens and kubeconfigs, and binds.
    pub fn start(cfg: &Config) -> Result<Self, StartError> {
        std::fs::create_dir_all(&cfg.dir)?;
        let store = crate::store::Store::open_with(&cfg.dir, cfg.store.clone())?;
        let api = Api::new(store).map_err(StartError::Store)?;
        let tokens = Tokens::load_or_create(&cfg.dir, &cfg.nodes)?;
        let listener = TcpListener::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        // The PKI is made even for plain HTTP: the server reaches kubelets over TLS.
        let pki =
            crate::tls::load_or_generate(&cfg.dir, &[addr.ip().to_string()]).map_err(StartError::Tls)?;
        let kubelet_ca = match &cfg.kubelet_ca {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                io::Error::new(e.kind(), format!("--kubelet-certificate-authority {}: {e}", path.display()))
            })?),
            None => None,
        };
        let kubelet_tls =
            crate::tls::kubelet_client_config(&pki, kubelet_ca.as_deref()).map_err(StartError::Tls)?;
        let (tls, ca, scheme) = if cfg.insecure_http {
            (None, None, "http")
        } else {
            let sc = crate::tls::server_config(&pki).map_err(StartError::Tls)?;
            (Some(sc), Some(pki.ca_pem), "https")
        };
        let url = format!("{scheme}://{host}:{}", addr.port());
        crate::kubeconfig::write(
            &cfg.dir,
            "admin",
            &crate::kubeconfig::render(&url, ca.as_deref(), "admin", &tokens.admin),
        )?;
        // Every node's credential in DIR/nodes/NAME.kubeconfig; DIR/node.kubeconfig is the
        // first `--node`'s, or else the first node's.
        let nodes_dir = cfg.dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir)?;
        let first = cfg.nodes.first().or_else(|| tokens.nodes.keys().next());
        for (node, token) in &tokens.nodes {
            let text = crate::kubeconfig::render(&url, ca.as_deref(), &format!("system:node:{node}"), token);
            crate::kubeconfig::write(&nodes_dir, node, &text)?;
            if Some(node) == first {
                crate::kubeconfig::write(&cfg.dir, "node", &text)?;
            }
        }
        Ok(Server {
            listener,
            limits: cfg.limits,
            tls,
            tokens: Arc::new(tokens),
            api: Arc::new(api),
            kubelet_tls,
            url,
        })
    }

    /// The API (for in-process controllers).
    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Accepts connections forever.
    pub fn serve(self) -> io::Result<()> {
        let slots = Arc::new(Slots::new(self.limits));
        for conn in self.listener.incoming() {
            let Ok(conn) = conn else { continue };
            let Ok(peer) = conn.peer_addr() else { continue };
            let accepted = Instant::now();
            let tls = self.tls.clone();
            let slot = match slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    if let Some(refusing) = slots.refuser() {
                        let _ = thread::Builder::new().name("refuse".into()).spawn(move || {
                            refuse(conn, tls, &why);
                            drop(refusing);
                        });
                    }
                    continue;
                }
            };
            let (tokens, api, limits) = (self.tokens.clone(), self.api.clone(), self.limits);
            let kubelet_tls = self.kubelet_tls.clone();
            let _ = thread::Builder::new().name("conn".into()).spawn(move || {
                let _slot = slot;
                let _ = conn.set_nodelay(true);
                let _ = conn.set_write_timeout(Some(limits.request_timeout));
                let probe = conn.try_clone().ok();
                let alive = move || probe.as_ref().is_none_or(peer_open);
                let deadline = Rc::new(Cell::new(Some(accepted + limits.read_header_timeout)));
                let timed = Timed { tcp: conn, deadline: deadline.clone() };
                let ctx = Conn { tokens: &tokens, api: &api, kubelet_tls: &kubelet_tls, limits, deadline };
                match tls {
                    Some(cfg) => {
                        let Ok(sc) = rustls::ServerConnection::new(cfg) else { return };
                        serve_conn(rustls::StreamOwned::new(sc, timed), &ctx, &alive);
                    }
                    None => serve_conn(timed, &ctx, &alive),
                }
            });
        }
        Ok(())
    }
}

/// A TCP stream whose reads fail with `TimedOut` once a deadline passes; the connection's
/// loop moves the deadline (`None`: reads wait as long as it takes).
struct Timed {
    tcp: TcpStream,
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.deadline.get() {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Some(left)
            }
            None => None,
        };
        self.tcp.set_read_timeout(timeout)?;
        self.tcp.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
            _ => e,
        })
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// How many threads at most answer 429 to connections over the caps at once.
const MAX_REFUSING: usize = 16;
/// How long a refused connection has for its TLS handshake and request head.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The connections open now, in all and by client address.
struct Slots {
    limits: Limits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    refusing: usize,
}

/// One connection's place, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

/// One refusing thread's place, given back on drop.
struct Refusing(Arc<Slots>);

impl Slots {
    fn new(limits: Limits) -> Self {
        Slots { limits, open: Mutex::new(Open::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, or why there is none.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, String> {
        let mut open = self.lock();
        if open.total >= self.limits.max_connections {
            return Err(format!(
                "too many connections: the server takes at most {}",
                self.limits.max_connections
            ));
        }
        let from = open.by_client.entry(ip).or_default();
        if *from >= self.limits.max_connections_per_client {
            return Err(format!(
                "too many connections from {ip}: the server takes at most {} from one client",
                self.limits.max_connections_per_client
            ));
        }
        *from += 1;
        open.total += 1;
        Ok(Slot { slots: self.clone(), ip })
    }

    /// A place for a refusing thread, if one is free.
    fn refuser(self: &Arc<Self>) -> Option<Refusing> {
        let mut open = self.lock();
        (open.refusing < MAX_REFUSING).then(|| {
            open.refusing += 1;
            Refusing(self.clone())
        })
    }

    /// Connections open now: in all, and from `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> (usize, usize) {
        let open = self.lock();
        (open.total, open.by_client.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_client.remove(&self.ip);
                // The map shrinks back once the clients that made it grow are gone.
                if open.by_client.capacity() > 64 && open.by_client.len() * 4 < open.by_client.capacity() {
                    open.by_client.shrink_to_fit();
                }
            }
        }
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        open.refusing = open.refusing.saturating_sub(1);
    }
}

/// Answers 429 on a connection over the caps: after its TLS handshake and its request head
/// (read and dropped, so that the client sees the answer), within [`REFUSE_TIMEOUT`].
fn refuse(conn: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, why: &str) {
    let _ = conn.set_write_timeout(Some(REFUSE_TIMEOUT));
    let deadline = Rc::new(Cell::new(Some(Instant::now() + REFUSE_TIMEOUT)));
    let timed = Timed { tcp: conn, deadline };
    let answer = ApiError::protocol(429, why.to_string()).response();
    match tls {
        Some(cfg) => {
            let Ok(sc) = rustls::ServerConnection::new(cfg) else { return };
            let mut r = BufReader::new(rustls::StreamOwned::new(sc, timed));
            if http::read_request_head(&mut r).is_ok() {
                let _ = write_response(r.get_mut(), &answer, false);
                r.get_mut().conn.send_close_notify();
                let _ = r.get_mut().flush();
            }
        }
        None => {
            let mut r = BufReader::new(timed);
            if http::read_request_head(&mut r).is_ok() {
                let _ = write_response(r.get_mut(), &answer, false);
            }
        }
    }
}

/// Whether the peer has not closed its side (a zero-byte peek means it has).
fn peer_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let r = s.peek(&mut b);
    let _ = s.set_nonblocking(false);
    !matches!(r, Ok(0))
}

/// The most of an oversized body read (and dropped) after answering 413, so that the client
/// sees the answer rather than a reset connection.
const DRAIN_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// The longest that takes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's requests share.
struct Conn<'a> {
    tokens: &'a Tokens,
    api: &'a Api,
    kubelet_tls: &'a Arc<rustls::ClientConfig>,
    limits: Limits,
    /// The read deadline of the connection's socket.
    deadline: Rc<Cell<Option<Instant>>>,
}

/// Paths anyone may read (as kube-apiserver's `system:public-info-viewer`).
fn public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/readyz" | "/livez")
}

fn serve_conn<S: Read + Write>(stream: S, ctx: &Conn<'_>, alive: &dyn Fn() -> bool) {
    let mut r = BufReader::new(stream);
    let mut first = true;
    loop {
        // The first byte of a request (after the TLS handshake for the first one): within the
        // head's deadline for the first request, the idle timeout for the next ones.
        if !first {
            ctx.deadline.set(Some(Instant::now() + ctx.limits.idle_timeout));
        }
        match r.fill_buf() {
            Ok(b) if !b.is_empty() => {}
            _ => return,
        }
        if !first {
            ctx.deadline.set(Some(Instant::now() + ctx.limits.read_header_timeout));
        }
        first = false;
        let read = http::read_request_head(&mut r).and_then(|(mut req, framing)| {
            ctx.deadline.set(Some(Instant::now() + ctx.limits.request_timeout));
            http::read_body(&mut r, framing, &mut req.body).map(|()| req)
        });
        ctx.deadline.set(None);
        let req = match read {
            Ok(req) => req,
            Err(e) => return refuse_request(&mut r, e, ctx),
        };
        let keep = req.keep_alive();
        let w = r.get_mut();
        if !handle(&req, ctx.tokens, ctx.api, ctx.kubelet_tls, w, alive) || !keep {
            return;
        }
    }
}

/// Answers a request that could not be read, if the connection still takes an answer. After
/// a refusal, what the client still sends is read and dropped (bounded in bytes and in time),
/// so that it sees the answer rather than a reset connection.
fn refuse_request<S: Read + Write>(r: &mut BufReader<S>, e: HttpError, ctx: &Conn<'_>) {
    let (error, drain) = match e {
        HttpError::Closed | HttpError::Io(_) => return,
        HttpError::TimedOut => (
            ApiError::protocol(
                408,
                format!(
                    "the request was not received in time (its head within {:?}, its body within {:?})",
                    ctx.limits.read_header_timeout, ctx.limits.request_timeout
                ),
            ),
            0,
        ),
        HttpError::Rejected { status, what } => (ApiError::protocol(status, what), DRAIN_LIMIT_BYTES),
        HttpError::TooLarge { unread } => {
            (ApiError::too_large(), unread.unwrap_or(DRAIN_LIMIT_BYTES).min(DRAIN_LIMIT_BYTES))
        }
    };
    if write_response(r.get_mut(), &error.response(), false).is_ok() && drain > 0 {
        ctx.deadline.set(Some(Instant::now() + DRAIN_TIMEOUT));
        let _ = io::copy(&mut r.by_ref().take(drain), &mut io::sink());
    }
}

/// Answers one request; false when the connection must close (after a stream).
fn handle(
    req: &Request,
    tokens: &Tokens,
    api: &Api,
    kubelet_tls: &Arc<rustls::ClientConfig>,
    w: &mut dyn Write,
    alive: &dyn Fn() -> bool,
) -> bool {
    let keep = req.keep_alive();
    if matches!(req.path.as_str(), "/healthz" | "/readyz" | "/livez") {
        let resp = http::Response {
            status: 200,
            content_type: "text/plain".into(),
            body: b"ok".to_vec(),
            warnings: Vec::new(),
        };
        return write_response(w, &resp, keep).is_ok();
    }
    let mut caller = None;
    if !public(&req.path) {
        let Some(user) = tokens.authenticate(req.header("authorization")) else {
            return write_response(w, &ApiError::unauthorized().response(), keep).is_ok();
        };
        if let Err(e) = authorize(&user, req, api) {
            return write_response(w, &e.response(), keep).is_ok();
        }
        if req.path == crate::api::resources::SELF_SUBJECT_REVIEWS {
            let resp = if req.method == "POST" {
                http::Response::json(
                    201,
                    &crate::api::resources::self_subject_review(&user.name, &user.groups),
                )
            } else {
                ApiError::method_not_allowed(&req.method).response()
            };
            return write_response(w, &resp, keep).is_ok();
        }
        caller = Some(user);
    }
    let accept = req.header("accept").unwrap_or("");
    if !accept.is_empty()
        && !accept.split(',').any(|a| {
            let a = a.trim();
            a.starts_with("application/json") && !a.contains("g=apidiscovery.k8s.io")
                || a.starts_with("*/*")
                || a.starts_with("application/*")
                || a.starts_with("text/plain")
                || a.starts_with("application/yaml")
                || a.starts_with("application/vnd.kubernetes.protobuf")
        })
    {
        return write_response(w, &ApiError::not_acceptable(accept).response(), keep).is_ok();
    }
    match api.handle_as(req, caller.as_ref()) {
        Reply::Full(resp) => write_response(w, &resp, keep).is_ok(),
        Reply::Watch(spec) => {
            let _ = spec.stream(&api.store, w, alive);
            false
        }
        Reply::Log(spec) => match spec.proxy(w, kubelet_tls) {
            Ok(Ok(())) => false,
            Ok(Err(e)) => write_response(w, &e.response(), keep).is_ok(),
            Err(_) => false,
        },
    }
}

/// Authorizes a request to a resource (discovery and OpenAPI documents are open to every
/// authenticated user).
fn authorize(user: &crate::auth::User, req: &Request, api: &Api) -> Result<(), ApiError> {
    let crate::api::Route::Resource(t) = crate::api::route(&req.path) else { return Ok(()) };
    let namespace = t.namespace.as_deref().unwrap_or("");
    let verb = crate::authz::verb(&req.method, t.name.is_some(), crate::api::is_true(req.param("watch")));
    let other_name;
    let name = match &t.name {
        Some(n) => n.as_str(),
        None if req.method == "POST" => {
            other_name = crate::api::parse_body(req)
                .ok()
                .and_then(|b| b.pointer("/metadata/name").and_then(|n| n.as_str()).map(String::from))
                .unwrap_or_default();
            other_name.as_str()
        }
        // A list or watch of one object by name names it, as the apiserver's request info has it.
        None if verb == "list" || verb == "watch" => {
            other_name = crate::authz::selected_name(req.param("fieldSelector")).unwrap_or_default();
            other_name.as_str()
        }
        None => "",
    };
    let attrs = crate::authz::Attributes {
        verb,
        group: t.resource.group,
        resource: t.resource.plural,
        subresource: t.sub.as_deref(),
        namespace,
        name,
        field_selector: req.param("fieldSelector"),
    };
    crate::authz::authorize(user, &attrs, &StoreGraph(&api.store))
}

/// The Node authorizer's graph, read from the store at each decision.
struct StoreGraph<'a>(&'a crate::store::Store);

impl crate::authz::Graph for StoreGraph<'_> {
    fn pod_node(&self, namespace: &str, name: &str) -> Option<String> {
        let pod = self.0.get(&crate::store::Key::new("pods", namespace, name))?;
        pod.pointer("/spec/nodeName").and_then(|n| n.as_str()).map(String::from)
    }

    fn node_uses_secret(&self, node: &str, namespace: &str, name: &str) -> bool {
        let (pods, _) = self.0.list("pods", Some(namespace));
        pods.iter().any(|p| {
            p.pointer("/spec/nodeName").and_then(|n| n.as_str()) == Some(node)
                && crate::secret::referenced_names(p).iter().any(|s| s == name)
        })
    }
}

/// Waits up to `timeout` for a TCP connection to `addr` to succeed.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_flags() {
        let mut l = Limits::default();
        assert_eq!(l.read_header_timeout, Duration::from_secs(32));
        l.set("--request-timeout", "2s").unwrap();
        l.set("--read-header-timeout", "1500ms").unwrap();
        l.set("--idle-timeout", "1s").unwrap();
        l.set("--max-connections", "10").unwrap();
        l.set("--max-connections-per-client", "3").unwrap();
        assert_eq!(
            l,
            Limits {
                max_connections: 10,
                max_connections_per_client: 3,
                read_header_timeout: Duration::from_millis(1500),
                request_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(1),
            }
        );
        for (flag, bad) in [("--request-timeout", "0"), ("--idle-timeout", "1d"), ("--max-connections", "-1")]
        {
            assert!(l.set(flag, bad).is_err(), "{flag} {bad}");
        }
        assert!(l.set("--nope", "1").is_err());
        for bad in ["", "1", "0s", "99999999999999999999h"] {
            assert!(l.set("--idle-timeout", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slots_cap_connections_in_all_and_by_client_and_come_back() {
        let limits = Limits { max_connections: 3, max_connections_per_client: 2, ..Limits::default() };
        let slots = Arc::new(Slots::new(limits));
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap(), "::1".parse().unwrap());
        let a1 = slots.take(a).unwrap();
        let a2 = slots.take(a).unwrap();
        let over = slots.take(a).err().unwrap();
        assert!(over.contains("from 127.0.0.2") && over.contains("at most 2"), "{over}");
        let b1 = slots.take(b).unwrap();
        assert!(slots.take(c).err().unwrap().contains("at most 3"));
        assert_eq!(slots.count(a), (3, 2));
        drop(a1);
        let c1 = slots.take(c).unwrap();
        drop((a2, b1, c1));
        assert_eq!(slots.count(a), (0, 0));
        assert!(slots.lock().by_client.is_empty());
        // Refusing threads are bounded too.
        let refusers: Vec<_> = std::iter::from_fn(|| slots.refuser()).take(100).collect();
        assert_eq!(refusers.len(), MAX_REFUSING);
        drop(refusers);
        assert!(slots.refuser().is_some());
    }
}
