//! The node's network at boot: find a card, bring the stack up (DHCP or the static
//! address from `net=`), print the `net:` line, try the `net.check=` server, and keep the
//! stack for later polls. Runs on the bootstrap CPU.

use super::config::{self, Dotted, Host, Mode};
use super::https::{Exchange, Progress};
use super::stack::{Event, NetError, Stack, TcpState};
use super::tls::TlsConfig;
use super::{Nic, NicError};
use crate::arch::time;
use crate::cmdline::Options;
use crate::kprintln;
use crate::pci::Function;
use alloc::boxed::Box;
use kubelet_lite::nodecfg::NodeBootConfig;
use log::{info, warn};

/// How long the boot waits for a DHCP lease before going on without an address (the
/// stack keeps asking in the background).
const DHCP_WAIT_MS: u64 = 10_000;
/// How long `net.check` may take, name lookup and connection included.
const CHECK_MS: u64 = 10_000;
/// How long the API server check may take, TLS handshake included (software crypto under
/// an emulator is slow).
const API_CHECK_MS: u64 = 60_000;

/// A driver's entry: whether it drives a function, and how to open it.
struct Driver {
    name: &'static str,
    matches: fn(&Function) -> bool,
    open: fn(&Function) -> Result<Box<dyn Nic>, NicError>,
}

/// The drivers, in the order they are tried.
static DRIVERS: &[Driver] = &[
    Driver {
        name: "virtio-net",
        matches: super::virtio::matches,
        open: |f| super::virtio::open(f).map(|n| Box::new(n) as Box<dyn Nic>),
    },
    Driver {
        name: "e1000",
        matches: |f| super::e1000::IDS.contains(&(f.vendor, f.device)),
        open: |f| super::e1000::open(f).map(|n| Box::new(n) as Box<dyn Nic>),
    },
];

/// The stack once it is up.
static STACK: spin::Mutex<Option<Stack>> = spin::Mutex::new(None);

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// A seed that differs between boots, for TCP sequence numbers and ports (not keys): the
/// CPU's random source where it has one, else the TSC.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    match crate::arch::random::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(()) => time::rdtsc().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
    }
}

/// The first card a driver takes, opened.
fn find_card() -> Option<Box<dyn Nic>> {
    for f in &crate::arch::pci::enumerate().functions {
        let Some(d) = DRIVERS.iter().find(|d| (d.matches)(f)) else { continue };
        match (d.open)(f) {
            Ok(nic) => return Some(nic),
            Err(e) => warn!("net: {} at {}: {e}; trying the next card", d.name, f.bdf),
        }
    }
    None
}

/// Brings the network up as the command line says, runs `net.check`, and, with a cluster
/// configuration, checks that the API server answers over TLS.
pub fn start(opts: &Options<'_>, cluster: Option<&NodeBootConfig>) {
    let mode = match opts.net.map(config::parse_mode) {
        None => Mode::Dhcp,
        Some(Ok(m)) => m,
        // The command-line parser already refused it.
        Some(Err(_)) => Mode::Dhcp,
    };
    if mode == Mode::Off {
        info!("net: off (net=off)");
        return;
    }
    let Some(nic) = find_card() else {
        kprintln!("net: no network card found (drivers: virtio-net, e1000)");
        return;
    };
    let (driver, mac) = (nic.driver(), nic.mac());
    info!("net: random source for keys: {}", crate::arch::random::source().describe());
    let mut stack = match Stack::new(nic, &mode, seed(), now_ms()) {
        Ok(s) => s,
        Err(e) => {
            kprintln!("net: {driver} {mac}: {e}");
            return;
        }
    };
    if mode == Mode::Dhcp {
        info!("net: {driver} {mac}: asking for a DHCP lease");
    }
    let deadline = now_ms() + DHCP_WAIT_MS;
    let mut up = false;
    while now_ms() < deadline && !up {
        if let Some(Event::Up(c)) = stack.poll(now_ms()) {
            kprintln!("net: {driver} {mac} {c}");
            up = true;
        }
        core::hint::spin_loop();
    }
    if !up {
        kprintln!("net: {driver} {mac}: no DHCP lease after {} s; still asking", DHCP_WAIT_MS / 1000);
    }
    if let (true, Some(target)) = (up, opts.net_check) {
        check(&mut stack, target);
    }
    if let (true, Some(c)) = (up, cluster) {
        api_check(&mut stack, c);
    }
    *STACK.lock() = Some(stack);
}

/// Polls the stack (renewing the lease); for the idle loop.
pub fn poll() {
    let Some(mut held) = STACK.try_lock() else { return };
    if let Some(s) = held.as_mut() {
        if let Some(mut orphans) = ORPHANS.try_lock() {
            for t in orphans.drain(..) {
                let _ = s.tcp_remove(t);
            }
        }
        match s.poll(now_ms()) {
            Some(Event::Up(c)) => kprintln!("net: {c}"),
            Some(Event::Down) => kprintln!("net: lease lost; asking again"),
            None => {}
        }
    }
}

/// Sockets of dropped registry connections that could not be given back at once (the stack
/// was busy): [`poll`] removes them.
static ORPHANS: spin::Mutex<alloc::vec::Vec<super::stack::Tcp>> = spin::Mutex::new(alloc::vec::Vec::new());
/// The round of polling registry connections are in ([`next_pull_round`]).
static PULL_ROUND: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Starts a new round of polling for registry connections (each hands out a bounded
/// number of bytes per round).
pub fn next_pull_round() {
    PULL_ROUND.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// The node's stack and clock, as registry connections reach them.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStack;

impl super::registry::StackAccess for NodeStack {
    fn with<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
        with_stack(f)
    }
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    fn round(&self) -> u64 {
        PULL_ROUND.load(core::sync::atomic::Ordering::Relaxed)
    }
    fn release(&self, t: super::stack::Tcp) {
        if with_stack(|s| s.tcp_remove(t)).is_none() {
            ORPHANS.lock().push(t);
        }
    }
}

/// Runs `step` until it gives an answer or the deadline passes, polling in between.
fn until<T>(s: &mut Stack, deadline: u64, mut step: impl FnMut(&mut Stack) -> Option<T>) -> Option<T> {
    while now_ms() < deadline {
        s.poll(now_ms());
        if let Some(v) = step(s) {
            return Some(v);
        }
        core::hint::spin_loop();
    }
    None
}

/// The address of `host`, looked up with the stack's DNS servers when it is a name.
fn lookup(s: &mut Stack, host: Host<'_>, deadline: u64) -> Result<config::Ipv4, alloc::string::String> {
    let name = match host {
        Host::Ip(a) => return Ok(a),
        Host::Name(name) => name,
    };
    let q = s.resolve(name).map_err(|e| alloc::format!("cannot look {name} up: {e}"))?;
    match until(s, deadline, |s| s.resolved(q).transpose()) {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(alloc::format!("{name}: {e}")),
        None => Err(alloc::format!("no DNS answer for {name}")),
    }
}

/// The wall clock in nanoseconds since the Unix epoch: the CMOS clock at the first call,
/// moved on by the TSC; `None` when the CMOS clock holds no valid date.
fn wall_ns() -> Option<u64> {
    wall_ns_at(time::now_ns())
}

/// The wall clock at monotonic time `mono_ns` (see [`wall_ns`]).
fn wall_ns_at(mono_ns: u64) -> Option<u64> {
    static AT_BOOT: spin::Once<Option<u64>> = spin::Once::new();
    let base = *AT_BOOT.call_once(|| crate::arch::rtc::read_ns().map(|ns| ns.saturating_sub(time::now_ns())));
    base.map(|b| b.saturating_add(mono_ns))
}

/// The wall clock in seconds since the Unix epoch (see [`wall_ns`]). 0 when the CMOS clock
/// holds no valid date (every certificate then looks not yet valid, so TLS fails with a
/// reason rather than trusting a wrong time).
pub fn wall_seconds() -> u64 {
    wall_ns().map_or(0, |ns| ns / 1_000_000_000)
}

/// With a cluster configuration: connect to the API server, verify its certificate against
/// the cluster CA and the configured name, ask for this node's Node object with the node's
/// token, and print the answer's status (and the server's message when it refuses).
fn api_check(s: &mut Stack, c: &NodeBootConfig) {
    let server = &c.server;
    match api_exchange(s, c) {
        Ok(line) => kprintln!("node: API server {server}: {line}"),
        Err(why) => kprintln!("node: API server {server}: {why}"),
    }
}

fn api_exchange(s: &mut Stack, c: &NodeBootConfig) -> Result<alloc::string::String, alloc::string::String> {
    use alloc::format;
    use kubelet_lite::http::{Limits, Method, Request};
    let deadline = now_ms() + API_CHECK_MS;
    let (tls, addr, port) = api_endpoint(s, c, deadline)?;
    let verify = c.verify_name().map_err(|e| format!("{e}"))?;
    let path = format!("/api/v1/nodes/{}", c.node_name);
    let request = Request::new(Method::Get, path.clone()).encode(&authority(c), Some(&c.token));
    let mut x = Exchange::start(s, &tls, addr, port, verify, &request, Limits::default())?;
    let progress = until(s, deadline, |s| match x.pump(s) {
        Progress::Pending => None,
        p => Some(p),
    });
    let status = x.status();
    let version = x.protocol_version().unwrap_or("TLS");
    let body = x.take_body();
    x.close(s);
    match (progress, status) {
        (None, _) => Err(alloc::string::String::from("no answer (timed out)")),
        (Some(Progress::Failed(why)), _) => Err(why),
        (Some(_), None) => Err(alloc::string::String::from("the server closed without answering")),
        (Some(_), Some(code)) => {
            Ok(format!("{version}, GET {path}: {}", super::answer::describe_status(code, &body)))
        }
    }
}

/// The API server's `host:port` as the Host header names it.
pub fn authority(c: &NodeBootConfig) -> alloc::string::String {
    match c.server() {
        Ok(s) => alloc::format!("{}:{}", s.host, s.port),
        Err(_) => c.server.clone(),
    }
}

/// The TLS configuration (the cluster CA, the CMOS clock, RDRAND) and the address of the
/// API server, looked up when it is a name.
pub fn api_endpoint(
    s: &mut Stack,
    c: &NodeBootConfig,
    deadline: u64,
) -> Result<(TlsConfig, config::Ipv4, u16), alloc::string::String> {
    use alloc::format;
    let server = c.server().map_err(|e| format!("{e}"))?;
    let host = match config::parse_ipv4(server.host) {
        Some(a) => Host::Ip(a),
        None => Host::Name(server.host),
    };
    let addr = lookup(s, host, deadline)?;
    if !crate::arch::random::available() {
        return Err(
            "TLS: this CPU has neither RDSEED nor RDRAND, and without them the node has no unpredictable keys; not connecting"
                .into(),
        );
    }
    let tls = TlsConfig::new(c.certificate_authority.as_bytes(), wall_seconds, crate::arch::random::fill)
        .map_err(|e| format!("TLS: {e}"))?;
    Ok((tls, addr, server.port))
}

/// Runs `f` on the stack, when it is up and not in use.
pub fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    let mut held = STACK.try_lock()?;
    held.as_mut().map(f)
}

/// The time in milliseconds, as the stack is polled with.
pub fn clock_ms() -> u64 {
    now_ms()
}

/// The wall clock in microseconds since the Unix epoch (see [`wall_ns`]), whole seconds and
/// fraction from one reading, so it never steps back; without a valid CMOS date, the time
/// since boot (it still moves on, for the agent's timers).
pub fn wall_micros() -> u64 {
    wall_micros_at(time::now_ns())
}

/// [`wall_micros`] at monotonic time `mono_ns`: the same instant gives the same answer
/// whenever it is asked.
pub fn wall_micros_at(mono_ns: u64) -> u64 {
    wall_ns_at(mono_ns).unwrap_or(mono_ns) / 1000
}

/// `net.check=HOST:PORT`: look the host up, connect, send an HTTP/1.0 request for `/`,
/// print the first line of the answer.
fn check(s: &mut Stack, target: &str) {
    let Ok((host, port)) = config::parse_endpoint(target) else { return };
    let start = now_ms();
    let deadline = start + CHECK_MS;
    let addr = match lookup(s, host, deadline) {
        Ok(a) => a,
        Err(why) => return kprintln!("net: check {target}: {why}"),
    };
    if let Host::Name(name) = host {
        kprintln!("net: check {target}: {name} is {}", Dotted(addr));
    }
    let t = match s.tcp_connect(addr, port) {
        Ok(t) => t,
        Err(e) => return kprintln!("net: check {target}: {e}"),
    };
    let verdict = talk(s, t, target, deadline);
    let _ = s.tcp_remove(t);
    match verdict {
        Ok(line) => kprintln!("net: check {target}: connected in {} ms, answer \"{line}\"", now_ms() - start),
        Err(why) => kprintln!("net: check {target}: {why}"),
    }
}

fn talk(
    s: &mut Stack,
    t: super::stack::Tcp,
    target: &str,
    deadline: u64,
) -> Result<alloc::string::String, &'static str> {
    match until(s, deadline, |s| match s.tcp_state(t) {
        Ok(TcpState::Opening) => None,
        Ok(st) => Some(st),
        Err(_) => Some(TcpState::Closed),
    }) {
        Some(TcpState::Open) => {}
        Some(_) => return Err("connection refused or reset"),
        None => return Err("no connection (timed out)"),
    }
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let request =
        alloc::format!("GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: hypervisor-net-check\r\n\r\n");
    let mut sent = 0;
    let mut answer = alloc::vec::Vec::new();
    let mut buf = [0u8; 512];
    let done = until(s, deadline, |s| {
        if sent < request.len() {
            match s.tcp_send(t, &request.as_bytes()[sent..]) {
                Ok(n) => sent += n,
                Err(e) => return Some(Err(e)),
            }
        }
        match s.tcp_recv(t, &mut buf) {
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(NetError::Closed) => return Some(Ok(())),
            Err(e) => return Some(Err(e)),
        }
        (answer.contains(&b'\n') || answer.len() >= 200).then_some(Ok(()))
    });
    match done {
        None => Err("no answer (timed out)"),
        Some(Err(_)) => Err("connection reset"),
        Some(Ok(())) if answer.is_empty() => Err("the server closed without answering"),
        Some(Ok(())) => {
            let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line: alloc::string::String = line
                .iter()
                .take(120)
                .map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })
                .collect();
            Ok(line)
        }
    }
}
