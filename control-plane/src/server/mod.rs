//! The HTTP(S) server: one thread per connection, HTTP/1.1 keep-alive, TLS through rustls,
//! bearer-token authentication, then the REST API.

pub mod http;
pub mod logs;

use crate::api::status::ApiError;
use crate::api::{Api, Reply};
use crate::auth::Tokens;
use http::{read_request, write_response, HttpError, Request};
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

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
        Ok(Server { listener, tls, tokens: Arc::new(tokens), api: Arc::new(api), kubelet_tls, url })
    }

    /// The API (for in-process controllers).
    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Accepts connections forever.
    pub fn serve(self) -> io::Result<()> {
        for conn in self.listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (tls, tokens, api) = (self.tls.clone(), self.tokens.clone(), self.api.clone());
            let kubelet_tls = self.kubelet_tls.clone();
            let _ = thread::Builder::new().name("conn".into()).spawn(move || {
                let _ = conn.set_nodelay(true);
                let probe = conn.try_clone().ok();
                let alive = move || probe.as_ref().is_none_or(peer_open);
                match tls {
                    Some(cfg) => {
                        let Ok(sc) = rustls::ServerConnection::new(cfg) else { return };
                        let stream = rustls::StreamOwned::new(sc, conn);
                        serve_conn(stream, &tokens, &api, &kubelet_tls, &alive);
                    }
                    None => serve_conn(conn, &tokens, &api, &kubelet_tls, &alive),
                }
            });
        }
        Ok(())
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

/// The most of an oversized body read before answering 413.
const DRAIN_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Paths anyone may read (as kube-apiserver's `system:public-info-viewer`).
fn public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/readyz" | "/livez")
}

fn serve_conn<S: Read + Write>(
    stream: S,
    tokens: &Tokens,
    api: &Api,
    kubelet_tls: &Arc<rustls::ClientConfig>,
    alive: &dyn Fn() -> bool,
) {
    let mut r = BufReader::new(stream);
    loop {
        let req = match read_request(&mut r) {
            Ok(req) => req,
            Err(HttpError::TooLarge { unread }) => {
                // Read what the client is still sending (bounded), so it sees the answer
                // instead of a reset connection.
                if let Some(n) = unread {
                    let _ = io::copy(&mut (&mut r).take(n.min(DRAIN_LIMIT_BYTES)), &mut io::sink());
                }
                let _ = write_response(r.get_mut(), &ApiError::too_large().response(), false);
                return;
            }
            Err(HttpError::Malformed(what)) => {
                let _ = write_response(r.get_mut(), &ApiError::bad_request(what).response(), false);
                return;
            }
            Err(_) => return,
        };
        let keep = req.keep_alive();
        let w = r.get_mut();
        if !handle(&req, tokens, api, kubelet_tls, w, alive) || !keep {
            return;
        }
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
