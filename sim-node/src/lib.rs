//! sim-node: kubelet-lite on the host against a real API server, with the simulated
//! runtime (`kubelet_lite::sim`). It serves `/containerLogs/...` over HTTPS on 127.0.0.1 at
//! the port it reports in the Node's `daemonEndpoints`, as a kubelet does: with a
//! self-signed serving certificate made at start, and only to clients whose certificate
//! chains to the cluster CA from its kubeconfig (the kubelet's `--client-ca-file`), which is
//! how the API server proves itself when it fetches logs. The endpoint is bounded as the
//! control plane's is: at most [`MAX_LOG_CONNECTIONS`] connections at once (more are closed at
//! once), [`HEAD_TIMEOUT`] from connecting to a complete request head (TLS handshake
//! included) of at most [`MAX_HEAD_BYTES`], and an answer of 400, 431 or 505 for a head that
//! `wire::http` refuses.
#![forbid(unsafe_code)]

pub mod images;
pub mod kubeconfig;
pub mod transport;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubelet_lite::agent::{Agent, NodeConfig, Op};
use kubelet_lite::http::{Client, Limits, LineDecoder, Request};
use kubelet_lite::logs::{render_from, LogRequest};
use kubelet_lite::time::Time;
use kubelet_lite::types::NodeSystemInfo;

use images::{NodeRuntime, PullConfig, Registries};
use kubeconfig::Kubeconfig;
use transport::{Endpoint, NetTransport};
use wire::http::HeadLimits;

/// The agent and the runtime, shared by the main loop, the watch and the log server.
struct Shared {
    agent: Agent,
    rt: NodeRuntime,
}

type State = Arc<Mutex<Shared>>;

fn lock(s: &State) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The current wall-clock time.
pub fn now() -> Time {
    Time(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0))
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// What this host reports as the node's capacity and system info.
pub fn host_node_config(name: &str, kubelet_port: u16) -> NodeConfig {
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let res = |mem: u64, disk: &str| {
        [
            ("cpu", cpus.to_string()),
            ("memory", format!("{mem}Ki")),
            ("pods", "110".to_string()),
            ("ephemeral-storage", disk.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let machine_id = read_trim("/etc/machine-id").unwrap_or_else(|| format!("{:032x}", now().micros()));
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "Linux".into());
    NodeConfig {
        name: name.to_string(),
        internal_ip: "127.0.0.1".into(),
        kubelet_port: i32::from(kubelet_port),
        capacity: res(mem_kib, "20Gi"),
        // kube-reserved/system-reserved 100Mi memory, eviction threshold 2Gi disk.
        allocatable: res(mem_kib.saturating_sub(100 * 1024), "18Gi"),
        node_info: NodeSystemInfo {
            system_uuid: machine_id.clone(),
            machine_id,
            boot_id: read_trim("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            kernel_version: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image,
            container_runtime_version: "lite://0.1.0".into(),
            kubelet_version: "v1.32.0".into(),
            kube_proxy_version: "v1.32.0".into(),
            operating_system: "linux".into(),
            architecture: "amd64".into(),
        },
        pod_net: "10.88.0".into(),
    }
}

/// The TLS configuration of the containerLogs server.
fn log_server_config(ca_pem: Option<&[u8]>, name: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let err = |e: &dyn std::fmt::Display| format!("containerLogs certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
    let cert = rcgen::CertificateParams::new(names).and_then(|p| p.self_signed(&key)).map_err(|e| err(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?;
    let builder = match ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| err(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => {
            eprintln!("sim-node: no cluster CA in the kubeconfig: containerLogs is served to any client");
            builder.with_no_client_auth()
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    builder.with_single_cert(vec![cert.der().clone()], key).map(Arc::new).map_err(|e| err(&e))
}

/// Most containerLogs connections at once; more are closed as they come.
pub const MAX_LOG_CONNECTIONS: usize = 64;
/// How long a client has from connecting to a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head taken (more is 431).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The open containerLogs connections, counted down on drop.
struct LogSlot(Arc<AtomicUsize>);

impl LogSlot {
    /// A slot, unless [`MAX_LOG_CONNECTIONS`] are taken.
    fn take(open: &Arc<AtomicUsize>) -> Option<LogSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_LOG_CONNECTIONS).then_some(n + 1))
            .ok()
            .map(|_| LogSlot(open.clone()))
    }
}

impl Drop for LogSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket whose reads fail once `until` has passed (`None`: no deadline).
struct Deadline {
    tcp: TcpStream,
    until: Option<Instant>,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = match self.until {
            Some(u) => match u.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                Some(left) => Some(left),
                None => return Err(std::io::ErrorKind::TimedOut.into()),
            },
            None => None,
        };
        self.tcp.set_read_timeout(left)?;
        self.tcp.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// The request head in `r`: its target, or the status and reason to answer.
fn read_log_head(r: &mut impl BufRead) -> std::io::Result<Result<String, (u16, String)>> {
    // The head's lines to the empty line that ends it, at most MAX_HEAD_BYTES in all.
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        let room = (MAX_HEAD_BYTES + 2).saturating_sub(raw.len()) as u64;
        let n = r.take(room).read_until(b'\n', &mut raw)?;
        let line = raw.get(start..).unwrap_or_default();
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if !line.ends_with(b"\n") {
            return Ok(Err((431, "request head too large".into())));
        }
        if (line == b"\r\n" || line == b"\n") && start > 0 {
            break;
        }
    }
    let limits = HeadLimits { max_bytes: MAX_HEAD_BYTES, max_headers: 100 };
    Ok(match wire::http::parse_request(&raw, limits) {
        Ok(Some((head, _))) => Ok(head.target),
        Ok(None) => Err((400, "request head truncated".into())),
        Err(e) => Err((e.status(), e.to_string())),
    })
}

fn serve_logs(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, state: State) -> std::io::Result<()> {
    tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
    let session = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let sock = Deadline { tcp, until: Some(Instant::now() + HEAD_TIMEOUT) };
    let mut s = rustls::StreamOwned::new(session, sock);
    let reply = |s: &mut dyn Write, code: u16, text: &str| {
        write!(s, "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            wire::http::reason(code), text.len())
    };
    let head = read_log_head(&mut BufReader::new(&mut s))?;
    // The handshake is done and the client certificate checked; the connection no longer
    // waits on a slow client's reads (follow streams run for as long as the container).
    s.sock.until = None;
    let target = match head {
        Ok(target) => target,
        Err((code, why)) => return reply(&mut s, code, &why),
    };
    let req = match LogRequest::parse(&target) {
        Ok(r) => r,
        Err(e) => return reply(&mut s, e.status(), &e.to_string()),
    };
    let first = {
        let mut g = lock(&state);
        g.rt.sim.advance_all(now());
        render_from(&req, &g.rt, now(), None)
    };
    let mut chunk = match first {
        Ok(c) => c,
        Err(e) => return reply(&mut s, e.status(), &e.to_string()),
    };
    if !req.follow {
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", chunk.bytes.len()).as_bytes())?;
        return s.write_all(&chunk.bytes);
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
    loop {
        if !chunk.bytes.is_empty() {
            s.write_all(format!("{:x}\r\n", chunk.bytes.len()).as_bytes())?;
            s.write_all(&chunk.bytes)?;
            s.write_all(b"\r\n")?;
            s.flush()?;
        }
        if chunk.done {
            break;
        }
        thread::sleep(Duration::from_millis(200));
        let next = {
            let mut g = lock(&state);
            g.rt.sim.advance_all(now());
            render_from(&req, &g.rt, now(), Some(chunk.cursor))
        };
        match next {
            Ok(c) => chunk = c,
            Err(_) => break,
        }
    }
    s.write_all(b"0\r\n\r\n")?;
    s.conn.send_close_notify();
    s.flush()
}

fn run_watch(ep: Endpoint, token: Option<String>, req: Request, state: State) {
    let mut client =
        Client::new(NetTransport::new(ep.clone(), None), ep.authority(), token, Limits::default());
    let limits = Limits::default();
    let result: Result<u16, ()> = match client.open_stream(&req) {
        Err(e) => {
            eprintln!("sim-node: watch failed: {e}");
            Err(())
        }
        Ok(mut stream) => {
            let status = stream.status;
            let mut dec = LineDecoder::new(limits.max_line_bytes);
            let mut ok = true;
            loop {
                match stream.next_bytes() {
                    Ok(Some(bytes)) if status == 200 => match dec.push(&bytes) {
                        Ok(lines) => {
                            let mut g = lock(&state);
                            let Shared { agent, rt } = &mut *g;
                            for l in lines {
                                agent.on_watch_line(&l, now(), rt);
                            }
                        }
                        Err(e) => {
                            eprintln!("sim-node: watch stream: {e}");
                            ok = false;
                            break;
                        }
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("sim-node: watch stream: {e}");
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                Ok(status)
            } else {
                Err(())
            }
        }
    };
    lock(&state).agent.on_watch_end(now(), result);
}

/// Runs the node until the process is killed; with `pull`, images are pulled from their
/// registries as it says, else simulated.
pub fn run(kubeconfig: &Path, name: &str, pull: Option<PullConfig>) -> Result<(), String> {
    let kc = Kubeconfig::load(kubeconfig).map_err(|e| e.to_string())?;
    let tls = match (&kc.ca_pem, kc.server.starts_with("https://")) {
        (Some(ca), true) => Some(transport::tls_config(ca)?),
        (None, true) => return Err("https server but the kubeconfig has no certificate authority".into()),
        _ => None,
    };
    let ep = Endpoint::parse(&kc.server, tls)?;
    let log_tls = log_server_config(kc.ca_pem.as_deref(), name)?;
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen for containerLogs: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let state: State = Arc::new(Mutex::new(Shared {
        agent: Agent::new(host_node_config(name, port), now()),
        rt: NodeRuntime::new(pull.map(Registries::new)),
    }));
    {
        let state = state.clone();
        thread::spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming().flatten() {
                // Over the cap, the connection is closed as it comes.
                let Some(slot) = LogSlot::take(&open) else { continue };
                let (state, tls) = (state.clone(), log_tls.clone());
                thread::spawn(move || {
                    let _ = serve_logs(conn, tls, state);
                    drop(slot);
                });
            }
        });
    }
    println!("sim-node {name}: API server {}, containerLogs on https://127.0.0.1:{port}", kc.server);
    let mut client = Client::new(
        NetTransport::new(ep.clone(), Some(Duration::from_secs(30))),
        ep.authority(),
        kc.token.clone(),
        Limits::default(),
    );
    let mut was_registered = false;
    loop {
        let out = {
            let mut g = lock(&state);
            let Shared { agent, rt } = &mut *g;
            agent.tick(now(), rt)
        };
        for o in out {
            if o.op == Op::WatchPods {
                let (ep, token, state) = (ep.clone(), kc.token.clone(), state.clone());
                thread::spawn(move || run_watch(ep, token, o.request, state));
                continue;
            }
            let reply = client.send(&o.request);
            if let Err(e) = &reply {
                eprintln!("sim-node: {} {}: {e}", o.request.method.as_str(), o.request.path);
            } else if let Ok(r) = &reply {
                if r.status >= 400 && o.op != Op::GetLease {
                    // The Status message says why (a 403 names the node the credential is for).
                    let message = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                        .unwrap_or_default();
                    eprintln!(
                        "sim-node: {} {}: HTTP {} {message}",
                        o.request.method.as_str(),
                        o.request.path,
                        r.status
                    );
                }
            }
            let mut g = lock(&state);
            let Shared { agent, rt } = &mut *g;
            agent.on_response(
                o.op,
                reply.as_ref().map(|r| (r.status, r.body.as_slice())).map_err(|_| ()),
                now(),
                rt,
            );
            if !was_registered && agent.registered() {
                was_registered = true;
                println!("sim-node {name}: registered (uid {})", agent.node_uid().unwrap_or("?"));
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_connections_are_capped_and_come_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots: Vec<LogSlot> = std::iter::from_fn(|| LogSlot::take(&open)).take(1000).collect();
        assert_eq!(slots.len(), MAX_LOG_CONNECTIONS);
        assert!(LogSlot::take(&open).is_none());
        drop(slots);
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert!(LogSlot::take(&open).is_some());
    }

    #[test]
    fn log_heads_are_bounded_and_checked() {
        let head = |raw: &[u8]| read_log_head(&mut BufReader::new(raw)).unwrap();
        assert_eq!(
            head(b"GET /containerLogs/a/b/c HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok("/containerLogs/a/b/c".into())
        );
        assert_eq!(head(b"GET / HTTP/2.0\r\n\r\n").map_err(|e| e.0), Err(505));
        assert_eq!(head(b"GET / HTTP/1.1\nHost: x\n\n").map_err(|e| e.0), Err(400));
        let big = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; MAX_HEAD_BYTES][..], b"\r\n\r\n"].concat();
        assert_eq!(head(&big).map_err(|e| e.0), Err(431));
        assert!(read_log_head(&mut BufReader::new(&b"GET / HTTP/1.1\r\n"[..])).is_err());
    }
}
