//! kubelet-lite's agent, run by the kernel: its requests go out as HTTPS exchanges over
//! the node's stack (each a fresh verified TLS connection), its replies and the pod watch
//! come back to it. Polled on CPU 0 from the idle loop and between vCPU slices.
//!
//! The pods bound to the node run as pod VMs ([`crate::runtime::PodVms`]); a node that
//! cannot run VMs (no usable virtualization, or a run of boot-module VMs) reports a
//! capacity of 0 pods, so no scheduler binds one to it.

use crate::kprintln;
use crate::net::https::{Exchange, Progress};
use crate::net::kubelet::KubeletServer;
use crate::net::node::{api_endpoint, authority, clock_ms, wall_micros, with_stack};
use crate::net::stack::Stack;
use crate::net::tls::{ServerTlsConfig, TlsConfig};
use crate::runtime::PodVms;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use kubelet_lite::agent::{Agent, NodeConfig, Op, Outgoing};
use kubelet_lite::http::{Limits, LineDecoder};
use kubelet_lite::nodecfg::NodeBootConfig;
use kubelet_lite::time::Time;
use kubelet_lite::types::NodeSystemInfo;

/// Most exchanges in flight at once (the watch aside).
const MAX_IN_FLIGHT: usize = 4;
/// How long one exchange may take before it counts as failed.
const EXCHANGE_MS: u64 = 30_000;
/// How often the agent's timers are advanced.
const TICK_MS: u64 = 200;

struct InFlight {
    op: Op,
    exchange: Exchange,
    started_ms: u64,
}

struct Watch {
    exchange: Exchange,
    lines: LineDecoder,
}

/// The agent and its connections.
pub struct NodeAgent {
    cfg: NodeBootConfig,
    agent: Agent,
    rt: PodVms,
    tls: TlsConfig,
    addr: [u8; 4],
    port: u16,
    queue: VecDeque<Outgoing>,
    in_flight: Vec<InFlight>,
    watch: Option<Watch>,
    /// The kubelet's HTTPS endpoint (containerLogs), when the configuration has its
    /// certificate.
    kubelet: Option<KubeletServer>,
    next_tick_ms: u64,
    said_registered: bool,
    last_refusal: Option<u16>,
}

static AGENT: spin::Mutex<Option<NodeAgent>> = spin::Mutex::new(None);

fn now() -> Time {
    Time(wall_micros())
}

/// The port the node's kubelet endpoint listens on.
pub const KUBELET_PORT: u16 = 10250;

/// Most pods a node admits (the kubelet's default maxPods); memory is the real bound.
pub const MAX_PODS: u32 = 110;

/// What the node has: its CPUs, its memory, what of it pods may take, how many pods.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// CPUs.
    pub cpus: u32,
    /// Usable memory.
    pub memory_kib: u64,
    /// Memory pods may take: what is free less what the hypervisor keeps for itself.
    pub allocatable_kib: u64,
    /// Pods it runs at once (0 when it runs no pod VMs).
    pub pods: u32,
}

/// What the node reports about itself.
fn node_config(c: &NodeBootConfig, ip: [u8; 4], cap: Capacity) -> NodeConfig {
    let resources = |mem_kib: u64| {
        [
            ("cpu", alloc::format!("{}", cap.cpus)),
            ("memory", alloc::format!("{mem_kib}Ki")),
            ("pods", alloc::format!("{}", cap.pods)),
            ("ephemeral-storage", String::from("0")),
        ]
        .into_iter()
        .map(|(k, v)| (String::from(k), v))
        .collect()
    };
    let mut id = [0u8; 16];
    let _ = crate::arch::random::fill(&mut id);
    let boot_id: String = id.iter().map(|b| alloc::format!("{b:02x}")).collect();
    NodeConfig {
        name: c.node_name.clone(),
        // As a kubelet's --node-ip: the address the control plane reaches, when forwarded.
        internal_ip: c
            .node_ip
            .clone()
            .unwrap_or_else(|| alloc::format!("{}", crate::net::config::Dotted(ip))),
        kubelet_port: i32::from(c.kubelet_port.unwrap_or(KUBELET_PORT)),
        capacity: resources(cap.memory_kib),
        allocatable: resources(cap.allocatable_kib),
        node_info: NodeSystemInfo {
            machine_id: boot_id.clone(),
            system_uuid: boot_id.clone(),
            boot_id,
            kernel_version: String::from(env!("CARGO_PKG_VERSION")),
            os_image: String::from("hypervisor (pods in crx-guest VMs)"),
            container_runtime_version: alloc::format!("crx://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: String::from("v1.32.0"),
            kube_proxy_version: String::from("v1.32.0"),
            operating_system: String::from("linux"),
            architecture: String::from("amd64"),
        },
        pod_net: String::from("10.88.0"),
    }
}

/// Starts the agent for the cluster in `c` once the network is up; its pods run from the
/// images of `store`.
pub fn start(c: &NodeBootConfig, cap: Capacity, store: crate::images::Store) {
    let started = with_stack(|s| {
        let ip = s.config().map(|k| k.addr)?;
        let deadline = clock_ms() + 10_000;
        Some((ip, api_endpoint(s, c, deadline)))
    })
    .flatten();
    let (ip, endpoint) = match started {
        Some(x) => x,
        None => return kprintln!("node: no network address; not joining the cluster"),
    };
    let (tls, addr, port) = match endpoint {
        Ok(e) => e,
        Err(why) => return kprintln!("node: {why}; not joining the cluster"),
    };
    let agent = Agent::new(node_config(c, ip, cap), now());
    let kubelet = serve_kubelet(c);
    *AGENT.lock() = Some(NodeAgent {
        cfg: c.clone(),
        agent,
        rt: PodVms::new(store, pulls(c), cap.memory_kib.saturating_mul(1024)),
        tls,
        addr,
        port,
        queue: VecDeque::new(),
        in_flight: Vec::new(),
        watch: None,
        kubelet,
        next_tick_ms: 0,
        said_registered: false,
        last_refusal: None,
    });
    kprintln!("node: joining as {} via {}", c.node_name, c.server);
}

/// How the node reaches registries, from its configuration; said on the console.
fn pulls(c: &NodeBootConfig) -> Option<crate::runtime::Pulls> {
    let r = &c.registries;
    let tls = match &r.certificate_authority {
        None => None,
        Some(ca) => {
            match TlsConfig::new(ca.as_bytes(), crate::net::node::wall_seconds, crate::arch::random::fill) {
                Ok(t) => Some(t),
                Err(e) => {
                    kprintln!("node: registry CA bundle: {e}; only insecure registries are pulled from");
                    None
                }
            }
        }
    };
    if r.insecure.is_empty() && tls.is_none() {
        kprintln!("node: no registry configured: pods run the images the boot image carries");
    } else {
        let insecure = if r.insecure.is_empty() { String::from("none") } else { r.insecure.join(", ") };
        kprintln!(
            "node: pulls images over {}; insecure registries: {insecure}",
            if tls.is_some() { "HTTPS (registry CA bundle)" } else { "plain HTTP only" }
        );
    }
    Some(crate::runtime::Pulls { registries: r.clone(), tls })
}

/// The kubelet's HTTPS endpoint on [`KUBELET_PORT`], serving with the configuration's
/// certificate to clients certified by the cluster CA; `None`, said on the console, when
/// the configuration has no certificate or it is unusable.
fn serve_kubelet(c: &NodeBootConfig) -> Option<KubeletServer> {
    let (Some(cert), Some(key)) = (&c.kubelet_certificate, &c.kubelet_key) else {
        kprintln!(
            "node: the configuration has no kubelet serving certificate: kubectl logs cannot reach this node"
        );
        return None;
    };
    let tls = match ServerTlsConfig::new(
        c.certificate_authority.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
        crate::net::node::wall_seconds,
        crate::arch::random::fill,
    ) {
        Ok(t) => t,
        Err(e) => {
            kprintln!("node: kubelet endpoint: {e}; kubectl logs cannot reach this node");
            return None;
        }
    };
    match with_stack(|s| KubeletServer::new(s, KUBELET_PORT, tls)) {
        Some(Ok(k)) => {
            kprintln!(
                "node: kubelet endpoint listening on port {KUBELET_PORT} (HTTPS, clients of the cluster CA)"
            );
            Some(k)
        }
        Some(Err(e)) => {
            kprintln!("node: kubelet endpoint: {e}");
            None
        }
        None => None,
    }
}

/// Moves the network and the agent along; for the idle loop and CPU 0's vCPU loop.
pub fn poll() {
    crate::net::node::poll();
    let Some(mut held) = AGENT.try_lock() else { return };
    let Some(a) = held.as_mut() else { return };
    with_stack(|s| a.step(s));
    a.rt.pump_pulls();
}

impl NodeAgent {
    fn open(&self, s: &mut Stack, o: &Outgoing) -> Result<Exchange, String> {
        let limits = Limits::default();
        let bytes = o.request.encode(&authority(&self.cfg), Some(&self.cfg.token));
        let name = self.cfg.verify_name().map_err(|e| alloc::format!("{e}"))?;
        Exchange::start(s, &self.tls, self.addr, self.port, name, &bytes, limits)
    }

    fn step(&mut self, s: &mut Stack) {
        let ms = clock_ms();
        if ms >= self.next_tick_ms {
            self.next_tick_ms = ms + TICK_MS;
            let out = self.agent.tick(now(), &mut self.rt);
            self.queue.extend(out);
        }
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(o) = self.queue.pop_front() else { break };
            let opened = self.open(s, &o);
            match (o.op.clone(), opened) {
                (Op::WatchPods, Ok(exchange)) => {
                    let lines = LineDecoder::new(Limits::default().max_line_bytes);
                    if let Some(old) = self.watch.replace(Watch { exchange, lines }) {
                        old.exchange.close(s);
                    }
                }
                (Op::WatchPods, Err(why)) => {
                    log::warn!("node: watch: {why}");
                    self.agent.on_watch_end(now(), Err(()));
                }
                (op, Ok(exchange)) => self.in_flight.push(InFlight { op, exchange, started_ms: ms }),
                (op, Err(why)) => {
                    log::warn!("node: {} {}: {why}", o.request.method.as_str(), o.request.path);
                    self.agent.on_response(op, Err(()), now(), &mut self.rt);
                }
            }
        }
        let mut i = 0;
        while i < self.in_flight.len() {
            let f = &mut self.in_flight[i];
            let progress = f.exchange.pump(s);
            let late = ms.saturating_sub(f.started_ms) > EXCHANGE_MS;
            if progress == Progress::Pending && !late {
                i += 1;
                continue;
            }
            let f = self.in_flight.swap_remove(i);
            self.finish(s, f, progress);
        }
        self.pump_watch(s);
        if let Some(k) = self.kubelet.as_mut() {
            if let Some(line) = k.poll(s, &self.rt, ms, now()) {
                kprintln!("node: {line}");
            }
        }
        if !self.said_registered && self.agent.registered() {
            self.said_registered = true;
            kprintln!(
                "node: registered {} (uid {})",
                self.cfg.node_name,
                self.agent.node_uid().unwrap_or("?")
            );
        }
    }

    fn finish(&mut self, s: &mut Stack, mut f: InFlight, progress: Progress) {
        let status = f.exchange.status();
        let body = f.exchange.take_body();
        f.exchange.close(s);
        let reply = match (&progress, status) {
            (Progress::Done, Some(code)) => Ok((code, body.as_slice())),
            (Progress::Failed(why), _) => {
                log::warn!("node: {:?}: {why}", f.op);
                Err(())
            }
            _ => {
                log::warn!("node: {:?}: no answer in {} s", f.op, EXCHANGE_MS / 1000);
                Err(())
            }
        };
        if let Ok((code, body)) = reply {
            // A refusal of the node's credential says why, once per kind.
            if (code == 401 || code == 403) && self.last_refusal != Some(code) {
                self.last_refusal = Some(code);
                kprintln!(
                    "node: API server refuses {:?}: {}",
                    f.op,
                    crate::net::answer::describe_status(code, body)
                );
            } else if code < 400 {
                self.last_refusal = None;
            }
        }
        self.agent.on_response(f.op, reply, now(), &mut self.rt);
    }

    fn pump_watch(&mut self, s: &mut Stack) {
        let Some(w) = self.watch.as_mut() else { return };
        let progress = w.exchange.pump(s);
        let bytes = w.exchange.take_body();
        if w.exchange.status() == Some(200) && !bytes.is_empty() {
            match w.lines.push(&bytes) {
                Ok(lines) => {
                    for l in lines {
                        self.agent.on_watch_line(&l, now(), &mut self.rt);
                    }
                }
                Err(e) => {
                    log::warn!("node: watch stream: {e}");
                    if let Some(w) = self.watch.take() {
                        w.exchange.close(s);
                    }
                    return self.agent.on_watch_end(now(), Err(()));
                }
            }
        }
        let end = match progress {
            Progress::Pending => return,
            Progress::Done => w.exchange.status().ok_or(()),
            Progress::Failed(why) => {
                log::warn!("node: watch: {why}");
                Err(())
            }
        };
        if let Some(w) = self.watch.take() {
            w.exchange.close(s);
        }
        self.agent.on_watch_end(now(), end);
    }
}
