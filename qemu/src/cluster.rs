//! `cargo xtask cluster up`: a development cluster whose nodes are the hypervisor. The
//! control plane runs as a child process with its state under `target/cluster/`; every node
//! is an emulator booting the kernel with its module pack (QEMU, PVH `-initrd`) or its ISO
//! (Bochs): its boot configuration (its own credential, the API server through a forward,
//! the InternalIP and kubelet port the control plane reaches it at, a kubelet serving
//! certificate) and the image bundles it can run. The run waits until kubectl shows every
//! node Ready, prints `export KUBECONFIG=...`, and then follows the consoles until it is
//! told to stop; then it stops every node and the control plane. It prints the pid of the
//! control plane and of every node's emulator; once the cluster is up, a node whose
//! emulator ends is reported and the others run on, and a control plane that exits is
//! started again on the same state directory and port (at most
//! [`CONTROL_PLANE_RESTARTS`] times).
//!
//! How a node reaches the API server: QEMU forwards the node's connections to
//! 10.0.2.100:PORT to the control plane at 127.0.0.1:PORT (`guestfwd`, one `busybox nc` per
//! connection), on otherwise restricted user networking. Bochs's slirp has `hostfwd` but
//! nothing that forwards a guest connection to the host, so a Bochs node's networking is
//! unrestricted: it reaches the host's loopback at 10.0.2.2 (every port). Either way the
//! node verifies the server's certificate for the name 127.0.0.1 (`tls-server-name`). The
//! control plane reaches each node's kubelet port 10250 through a forwarded host port
//! (`hostfwd`), which the node reports with InternalIP 127.0.0.1.

use crate::cluster_run::Job;
use crate::emulator::{Bochs, Network, NicModel, Qemu, FORWARD_ADDR, HOST_ADDR};
use crate::image::{self, target_dir};
use crate::machine::{Line, Machine};
use crate::node::{self, NodeImage, Reach};
use crate::Error;
use kubelet_lite::nodecfg::NodeBootConfig;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The port a node's kubelet endpoint listens on inside the node.
pub const KUBELET_PORT: u16 = 10250;
/// Most nodes `cluster up` starts (the machine has two cores).
pub const MAX_NODES: u32 = 8;
/// How long the control plane may take to print its ready line.
pub const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many console lines a failure shows.
pub const TAIL_LINES: usize = 40;
/// How many times a run restarts a control plane that exits once the cluster is up.
pub const CONTROL_PLANE_RESTARTS: u32 = 5;

/// What `cluster up` starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many nodes (n1..nN).
    pub nodes: u32,
    /// Node n1 runs under Bochs (Intel VMX) from an ISO instead of QEMU.
    pub bochs: bool,
    /// The images every node carries (`--image` values; busybox when empty).
    pub images: Vec<String>,
    /// CPUs per QEMU node.
    pub smp: u32,
    /// Memory per node, MiB.
    pub mem_mib: u32,
    /// How long to wait for every node to be Ready.
    pub ready_timeout: Duration,
    /// The program and first arguments that serve the control plane (`xtask control-plane`).
    pub control_plane: Vec<String>,
    /// kubectl.
    pub kubectl: PathBuf,
    /// QEMU nodes get an e1000 (Intel 82540EM) instead of virtio-net.
    pub e1000: bool,
    /// More registries on this machine (`127.0.0.1:PORT`) the nodes pull from over plain HTTP.
    pub insecure_registries: Vec<String>,
}

/// `target/cluster/`: the control plane's state, the nodes' ISOs and console logs.
pub fn cluster_dir() -> PathBuf {
    target_dir().join("cluster")
}

/// The control plane's state directory (its admin kubeconfig is `admin.kubeconfig` there).
pub fn state_dir() -> PathBuf {
    cluster_dir().join("control-plane")
}

/// The admin kubeconfig of the cluster.
pub fn admin_kubeconfig() -> PathBuf {
    state_dir().join("admin.kubeconfig")
}

/// Node `i`'s name (1-based): `n1`, `n2`, ...
pub fn node_name(i: u32) -> String {
    format!("n{i}")
}

/// A kubelet serving certificate (self-signed, as a kubelet makes its own without
/// `--tls-cert-file`) and its private key, both PEM: ECDSA P-256, with the names
/// 127.0.0.1 and `name`.
pub fn kubelet_serving_certificate(name: &str) -> Result<(String, String), Error> {
    kubelet_serving_certificate_from(name, None)
}

/// The CA that signs a cluster's kubelet serving certificates; the control plane is started
/// with `--kubelet-certificate-authority` naming its certificate, so that it sends log
/// requests (and its kubelet-client certificate) only to the nodes' own kubelets.
pub struct KubeletCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl KubeletCa {
    /// A new CA (ECDSA P-256).
    pub fn generate() -> Result<KubeletCa, Error> {
        let err = |e: rcgen::Error| Error::Usage(format!("kubelet CA: {e}"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "kubelet-serving-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages =
            vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(KubeletCa { cert_pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) })
    }
}

/// [`kubelet_serving_certificate`], signed by `ca` when one is given.
pub fn kubelet_serving_certificate_from(
    name: &str,
    ca: Option<&KubeletCa>,
) -> Result<(String, String), Error> {
    let err = |e: rcgen::Error| Error::Usage(format!("kubelet serving certificate for {name}: {e}"));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), name.to_string()]).map_err(err)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name}@kubelet"));
    let cert = match ca {
        Some(ca) => {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            params.signed_by(&key, &ca.issuer).map_err(err)?
        }
        None => params.self_signed(&key).map_err(err)?,
    };
    Ok((cert.pem(), key.serialize_pem()))
}

/// `count` distinct free TCP ports on 127.0.0.1 (held open together while they are chosen,
/// so none is picked twice).
pub fn free_ports(count: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| Error::io("reading a port", e)))
        .collect()
}

/// Where a node reaches the API server listening on 127.0.0.1:`api_port`: through QEMU's
/// forward at 10.0.2.100, or (Bochs, unrestricted) at the slirp host 10.0.2.2; either way
/// the certificate's name is 127.0.0.1.
pub fn reach(api_port: u16, bochs: bool) -> Reach {
    let host = if bochs { HOST_ADDR } else { FORWARD_ADDR };
    Reach { server: Some(format!("https://{host}:{api_port}")), tls_server_name: Some("127.0.0.1".into()) }
}

/// Node `name`'s boot configuration from its kubeconfig: the API server through
/// [`reach`], InternalIP 127.0.0.1, the forwarded `kubelet_port`, and a fresh serving
/// certificate (from `ca` when given, else self-signed).
pub fn node_config(
    kubeconfig: &Path,
    name: &str,
    api_port: u16,
    kubelet_port: u16,
    bochs: bool,
    ca: Option<&KubeletCa>,
) -> Result<NodeBootConfig, Error> {
    let mut c = node::from_kubeconfig(kubeconfig, name, &reach(api_port, bochs))?;
    let (cert, key) = kubelet_serving_certificate_from(name, ca)?;
    c.node_ip = Some("127.0.0.1".into());
    c.kubelet_port = Some(kubelet_port);
    c.kubelet_certificate = Some(cert);
    c.kubelet_key = Some(key);
    c.check().map_err(|e| Error::Usage(format!("node {name}: {e}")))?;
    Ok(c)
}

/// The network of a node whose kubelet is reached at 127.0.0.1:`kubelet_port` and which
/// reaches the API server at 127.0.0.1:`api_port`.
pub fn node_network(api_port: u16, kubelet_port: u16, bochs: bool) -> Network {
    let mut net = Network::new(if bochs { NicModel::E1000 } else { NicModel::VirtioNet });
    net.host_forwards.push((kubelet_port, KUBELET_PORT));
    if bochs {
        net.unrestricted = true;
    } else {
        net.guest_forwards.push((api_port, api_port));
    }
    net
}

/// Points a node at the registry on the host's 127.0.0.1:`port`: the registry is insecure
/// (plain HTTP) in its configuration, and reached at QEMU's forward 10.0.2.100:`port` (a
/// Bochs node, unrestricted, at the slirp host 10.0.2.2), while pods name it as the host
/// does, `127.0.0.1:PORT/...`.
pub fn use_registry(cfg: &mut NodeBootConfig, net: &mut Network, port: u16, bochs: bool) {
    let registry = format!("127.0.0.1:{port}");
    if cfg.registries.insecure.contains(&registry) {
        return;
    }
    let host = if bochs { HOST_ADDR } else { FORWARD_ADDR };
    cfg.registries.insecure.push(registry.clone());
    cfg.registries.endpoints.insert(registry, format!("{host}:{port}"));
    if !bochs {
        net.guest_forwards.push((port, port));
    }
}

/// The port the cluster's registry takes when it is free.
pub const REGISTRY_PORT: u16 = 5000;

/// The cluster's registry (`target/cluster/registry`, on [`REGISTRY_PORT`] or, when that is
/// taken, a free port) holding every image the nodes carry: each under the repository and
/// tag it answers to, and the busybox demo image as `busybox:latest` and
/// `busybox:VERSION` too. Returns it and the references pushed.
pub fn start_registry(wanted: &[NodeImage]) -> Result<(crate::registry::Registry, Vec<String>), Error> {
    let dir = cluster_dir().join("registry");
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("clearing {}", dir.display()), e))?;
    }
    let port = std::net::TcpListener::bind(("127.0.0.1", REGISTRY_PORT)).ok().map(|_| REGISTRY_PORT);
    let registry = crate::registry::Registry::start(&dir, port, None)?;
    let mut pushed = Vec::new();
    for image in wanted {
        let mut tags: Vec<String> = Vec::new();
        for n in &image.names {
            let Ok(r) = kubelet_lite::image::Reference::parse(n) else { continue };
            let repo = r.repository.strip_prefix("library/").unwrap_or(&r.repository).to_string();
            tags.push(format!("{repo}:{}", r.tag.as_deref().unwrap_or("latest")));
        }
        if image.names.iter().any(|n| n == "busybox") {
            if let Some(v) = busybox_version() {
                tags.push(format!("busybox:{v}"));
            }
        }
        for t in tags {
            registry.push(&image.dir, &t, crate::registry::Format::Oci)?;
            pushed.push(format!("{}/{t}", registry.addr()));
        }
    }
    Ok((registry, pushed))
}

/// The host busybox's version (`1.35.0`), from its banner.
fn busybox_version() -> Option<String> {
    let out = Command::new(crate::setup::BUSYBOX_PATH).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().next()?.split_whitespace().nth(1)?.strip_prefix('v')?;
    v.bytes().all(|b| b.is_ascii_digit() || b == b'.').then(|| v.to_string())
}

/// Says what `cluster up` is doing.
fn say(what: &str) {
    eprintln!("cluster: {what}");
}

/// The control plane, a child in a process group of its own (so a Ctrl-C on the terminal
/// reaches only `cluster up`, which stops it in turn).
pub struct ControlPlane {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The file its output goes to.
    pub log: PathBuf,
    /// What started it, for a restart: the program, the state directory, the nodes.
    program: Vec<String>,
    dir: PathBuf,
    nodes: Vec<String>,
}

impl ControlPlane {
    /// Starts `program` (`xtask control-plane`) with `--dir DIR --listen 127.0.0.1:0 --node
    /// NAME...` and waits for its ready line; its output goes to `log`, emptied first.
    pub fn start(
        program: &[String],
        dir: &Path,
        nodes: &[String],
        log: &Path,
    ) -> Result<ControlPlane, Error> {
        ControlPlane::spawn(program, dir, nodes, log, "127.0.0.1:0", false)
    }

    /// Starts it again after it has exited: the same program, state directory, nodes and
    /// port (nodes and kubeconfigs keep reaching it there), its output appended to the log.
    pub fn restart(&self) -> Result<ControlPlane, Error> {
        let listen = format!("127.0.0.1:{}", self.port()?);
        ControlPlane::spawn(&self.program, &self.dir, &self.nodes, &self.log, &listen, true)
    }

    fn spawn(
        program: &[String],
        dir: &Path,
        nodes: &[String],
        log: &Path,
        listen: &str,
        append: bool,
    ) -> Result<ControlPlane, Error> {
        let (exe, first) =
            program.split_first().ok_or_else(|| Error::Usage("no control-plane program".into()))?;
        let out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(exe);
        cmd.args(first).arg("--dir").arg(dir).args(["--listen", listen]);
        for n in nodes {
            cmd.args(["--node", n]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err).process_group(0);
        let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        let mut copy = out;
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(copy, "{line}");
                if let Some(url) = line.strip_prefix("control plane ready: ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let mut cp = ControlPlane {
            child,
            url: String::new(),
            log: log.to_path_buf(),
            program: program.to_vec(),
            dir: dir.to_path_buf(),
            nodes: nodes.to_vec(),
        };
        let deadline = Instant::now() + CONTROL_PLANE_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(url) => {
                    cp.url = url;
                    return Ok(cp);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = cp.child.try_wait() {
                        return Err(Error::Missing(format!(
                            "the control plane exited ({status}) before its ready line:\n{}",
                            tail_file(log, TAIL_LINES)
                        )));
                    }
                }
                Err(_) => {
                    cp.stop();
                    return Err(Error::Missing(format!(
                        "the control plane printed no ready line within {CONTROL_PLANE_TIMEOUT:?}:\n{}",
                        tail_file(log, TAIL_LINES)
                    )));
                }
            }
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> Result<u16, Error> {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| Error::Missing(format!("the control plane's URL {} has no port", self.url)))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks it to stop (SIGTERM), kills it after 5 s, and reaps it.
    pub fn stop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        if self.exited().is_some() {
            return;
        }
        let pid = i32::try_from(self.child.id()).ok().map(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = killpg(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = pid {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of a file.
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running node: its emulator, how far its console has been copied, its console log.
pub struct Node {
    /// `n1`, ...
    pub name: String,
    /// The emulator.
    pub machine: Machine,
    /// The host port forwarded to its kubelet port.
    pub kubelet_port: u16,
    /// Whether it runs under Bochs.
    pub bochs: bool,
    cursor: usize,
    log: File,
    /// The console log's path (`target/cluster/NAME.console.log`).
    pub log_path: PathBuf,
    ended: bool,
}

impl Node {
    fn new(name: &str, machine: Machine, kubelet_port: u16, bochs: bool) -> Result<Node, Error> {
        let log_path = cluster_dir().join(format!("{name}.console.log"));
        let log =
            File::create(&log_path).map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        Ok(Node { name: name.into(), machine, kubelet_port, bochs, cursor: 0, log, log_path, ended: false })
    }

    /// Copies new console lines to the log, and to stdout as `NAME| text` when `echo`.
    /// Returns the emulator's exit status the first time it is seen to have ended.
    fn pump(&mut self, echo: bool) -> Option<std::process::ExitStatus> {
        let lines: Vec<Line> = self.machine.lines_from(self.cursor);
        self.cursor += lines.len();
        let mut out = std::io::stdout().lock();
        for l in &lines {
            let _ = writeln!(
                self.log,
                "{:>9.3}{} {}",
                l.at.as_secs_f64(),
                if l.console { ' ' } else { '~' },
                l.text
            );
            if echo && l.console {
                let _ = writeln!(out, "{}| {}", self.name, l.text);
            }
        }
        let _ = out.flush();
        if self.ended {
            return None;
        }
        let status = self.machine.finished()?;
        self.ended = true;
        Some(status)
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<String> = self
            .machine
            .lines()
            .into_iter()
            .filter(|l| l.console)
            .map(|l| format!("{}| {}", self.name, l.text))
            .collect();
        if lines.is_empty() {
            return format!("{}| (no console output)", self.name);
        }
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Each node's Ready condition as kubectl shows it (`True`, `False`, `Unknown`); a node
/// kubectl does not list is absent.
pub fn readiness(kubectl: &Path, kubeconfig: &Path, cache: &Path) -> Result<Vec<(String, String)>, String> {
    let out = kubectl_output(
        kubectl,
        kubeconfig,
        cache,
        &[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}{"="}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, s)| (n.to_string(), if s.is_empty() { "Unknown".to_string() } else { s.to_string() }))
        .collect())
}

/// Runs kubectl with `kubeconfig` (and a cache directory of its own), at most 30 s; its
/// stdout, or what went wrong.
pub fn kubectl_output(
    kubectl: &Path,
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
) -> Result<String, String> {
    let mut cmd = Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=20s")
        .args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().map_err(|e| format!("running {}: {e}", kubectl.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Holds `target/cluster/lock` while a cluster runs, so two `cluster up` never share (and
/// wipe) one state directory.
fn lock_cluster_dir() -> Result<File, Error> {
    let dir = cluster_dir();
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("lock");
    let file = File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Usage(format!(
            "another `cluster up` is running (it holds {}); stop it first",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// The ports of `--insecure-registry 127.0.0.1:PORT` values.
fn registry_ports(opts: &Options) -> Result<Vec<u16>, Error> {
    opts.insecure_registries
        .iter()
        .map(|r| {
            r.strip_prefix("127.0.0.1:").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0).ok_or_else(
                || {
                    Error::Usage(format!(
                        "--insecure-registry {r}: give 127.0.0.1:PORT, a registry on this machine"
                    ))
                },
            )
        })
        .collect()
}

/// Checks the options before anything is built.
pub fn check(opts: &Options) -> Result<(), Error> {
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        return Err(Error::Usage(format!("--nodes must be 1 to {MAX_NODES}, not {}", opts.nodes)));
    }
    if opts.smp == 0 {
        return Err(Error::Usage("--smp must be at least 1".into()));
    }
    Ok(())
}

/// Brings the cluster up and keeps it up until `stop()` says so; then stops every node and
/// the control plane. Ok after a requested stop; an error when a step fails or the nodes do
/// not all become Ready in time (everything started is stopped first).
pub fn up(opts: &Options, stop: &dyn Fn() -> bool) -> Result<(), Error> {
    up_with(opts, stop, None)
}

/// [`up`], then `job` (when given) instead of echoing the consoles: the run ends when the
/// job is over.
pub fn up_with(opts: &Options, stop: &dyn Fn() -> bool, mut job: Option<&mut Job>) -> Result<(), Error> {
    check(opts)?;
    let extra_registries = registry_ports(opts)?;
    let _lock = lock_cluster_dir()?;
    let names: Vec<String> = (1..=opts.nodes).map(node_name).collect();

    say("building the kernel, crx-guest and images");
    crate::setup::ensure(crate::setup::QEMU)?;
    crate::setup::ensure(crate::setup::BUSYBOX)?;
    crate::setup::ensure(crate::setup::KUBECTL)?;
    if opts.bochs {
        crate::setup::ensure(crate::setup::ISO)?;
        crate::setup::ensure(crate::setup::BOCHS)?;
    }
    let default_images = ["busybox".to_string()];
    let image_args = if opts.images.is_empty() { &default_images[..] } else { &opts.images[..] };
    let built = (|| -> Result<_, Error> {
        let wanted = image_args.iter().map(|a| NodeImage::from_arg(a)).collect::<Result<Vec<_>, _>>()?;
        let kernel = image::build_kernel()?;
        let guest = crate::pod::build_guest_kernel()?;
        let elf = fs::read(&guest).map_err(|e| Error::io(format!("reading {}", guest.display()), e))?;
        let bundles = wanted.iter().map(|i| i.bundle(&elf)).collect::<Result<Vec<_>, _>>()?;
        Ok((wanted, kernel, bundles))
    })();
    let (wanted, kernel, bundles) = match built {
        Ok(b) => b,
        // A Ctrl-C on the terminal reaches cargo too, whose build then fails: a stop, not an error.
        Err(_) if stop() => return Ok(()),
        Err(e) => return Err(e),
    };
    for (i, name) in wanted.iter().zip(node::image_module_names(&bundles)) {
        say(&format!("image {name}: {} ({})", i.dir.display(), i.names.join(", ")));
    }
    if stop() {
        return Ok(());
    }

    say("starting the image registry");
    let (registry, pushed) = start_registry(&wanted)?;
    say(&format!(
        "registry ready: {} (pid {}, log {}) holding {}; push your own with skopeo copy \
         --dest-tls-verify=false oci:DIR docker://{}/NAME:TAG",
        registry.addr(),
        registry.pid().unwrap_or(0),
        registry.log_path().display(),
        pushed.join(", "),
        registry.addr()
    ));

    say("starting the control plane");
    let state = state_dir();
    if state.exists() {
        fs::remove_dir_all(&state).map_err(|e| Error::io(format!("clearing {}", state.display()), e))?;
    }
    fs::create_dir_all(&state).map_err(|e| Error::io(format!("creating {}", state.display()), e))?;
    // The nodes' kubelet serving certificates come from one CA, which the control plane
    // checks them against (kube-apiserver's --kubelet-certificate-authority).
    let kubelet_ca = KubeletCa::generate()?;
    let ca_file = state.join("kubelet-ca.crt");
    fs::write(&ca_file, &kubelet_ca.cert_pem)
        .map_err(|e| Error::io(format!("writing {}", ca_file.display()), e))?;
    let mut program = opts.control_plane.clone();
    program.push("--kubelet-certificate-authority".into());
    program.push(ca_file.display().to_string());
    let mut cp = ControlPlane::start(&program, &state, &names, &cluster_dir().join("control-plane.log"))?;
    let api_port = cp.port()?;
    say(&format!(
        "control plane ready: {} (pid {}, state {}, log {})",
        cp.url,
        cp.pid(),
        state.display(),
        cp.log.display()
    ));

    let kubelet_ports = free_ports(names.len())?;
    let mut nodes: Vec<Node> = Vec::new();
    let result = (|| -> Result<(), Error> {
        for (i, name) in names.iter().enumerate() {
            if stop() {
                return Ok(());
            }
            let bochs = opts.bochs && i == 0;
            let kubeconfig = state.join("nodes").join(format!("{name}.kubeconfig"));
            let mut cfg =
                node_config(&kubeconfig, name, api_port, kubelet_ports[i], bochs, Some(&kubelet_ca))?;
            let mut net = node_network(api_port, kubelet_ports[i], bochs);
            use_registry(&mut cfg, &mut net, registry.port(), bochs);
            for port in &extra_registries {
                use_registry(&mut cfg, &mut net, *port, bochs);
            }
            if opts.e1000 {
                net.model = NicModel::E1000;
            }
            let machine = if bochs {
                let module = node::write_module(&cfg)?;
                let written = node::write_image_modules(&bundles)?;
                let mut modules: Vec<(String, PathBuf)> = vec![("node.cfg".into(), module)];
                modules.extend(written.into_iter().map(|(n, p)| (format!("images/{n}"), p)));
                let refs: Vec<(&str, &Path)> =
                    modules.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
                let iso = cluster_dir().join(format!("{name}.iso"));
                image::build_iso_with_modules(&kernel, "", &refs, &iso)?;
                say(&format!(
                    "booting node {name} under Bochs (Intel VMX, e1000) from {}; kubelet port 10250 at \
                     127.0.0.1:{}; Bochs's slirp forwards no guest connections, so {name}'s network is \
                     unrestricted and it reaches the API server at {HOST_ADDR}:{api_port}",
                    iso.display(),
                    kubelet_ports[i]
                ));
                let node = Bochs { mem_mib: opts.mem_mib, net: Some(net), ..Bochs::new(&iso) };
                let machine = Machine::bochs(&format!("cluster-{name}"), &node)?;
                say(&format!("{name}: Bochs runs in process group {} (script, pid {0})", machine.pid()));
                machine
            } else {
                let pack = node::write_boot_pack(&cfg, &bundles)?;
                say(&format!(
                    "booting node {name} under QEMU (AMD SVM, {}, {} CPUs, {} MiB) with {}; kubelet \
                     port 10250 at 127.0.0.1:{}",
                    if opts.e1000 { "e1000" } else { "virtio-net" },
                    opts.smp,
                    opts.mem_mib,
                    pack.display(),
                    kubelet_ports[i]
                ));
                let node = Qemu {
                    smp: opts.smp,
                    mem_mib: opts.mem_mib,
                    initrd: Some(pack),
                    net: Some(net),
                    ..Qemu::new(&kernel)
                };
                let machine = Machine::qemu(name, &node)?;
                say(&format!("{name}: QEMU pid {}", machine.pid()));
                machine
            };
            nodes.push(Node::new(name, machine, kubelet_ports[i], bochs)?);
        }
        wait_ready(opts, &mut cp, &mut nodes, stop)?;
        if stop() {
            return Ok(());
        }
        let cache = cluster_dir().join("kube-cache");
        if let Ok(table) =
            kubectl_output(&opts.kubectl, &admin_kubeconfig(), &cache, &["get", "nodes", "-o", "wide"])
        {
            eprint!("{table}");
        }
        let admin = fs::canonicalize(admin_kubeconfig()).unwrap_or_else(|_| admin_kubeconfig());
        if job.is_some() {
            say(&format!(
                "every node is Ready (KUBECONFIG={}; consoles in {})",
                admin.display(),
                cluster_dir().display()
            ));
        } else {
            say("every node is Ready; the consoles follow (NAME| line); stop with Ctrl-C");
            println!("export KUBECONFIG={}", admin.display());
            let _ = std::io::stdout().flush();
        }
        follow(&mut cp, &mut nodes, stop, job.as_deref_mut().map(|j| (j, admin.as_path())))
    })();
    say(&format!(
        "stopping {} and the control plane",
        if nodes.is_empty() {
            "no node".to_string()
        } else {
            nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(", ")
        }
    ));
    for mut n in nodes {
        n.pump(false);
        let _ = n.machine.stop();
    }
    cp.stop();
    drop(registry);
    say("stopped");
    result
}

/// Waits until kubectl shows every node Ready, copying the consoles to their logs.
fn wait_ready(
    opts: &Options,
    cp: &mut ControlPlane,
    nodes: &mut [Node],
    stop: &dyn Fn() -> bool,
) -> Result<(), Error> {
    say(&format!(
        "waiting for the nodes to be Ready (at most {} s; consoles in {}/NAME.console.log)",
        opts.ready_timeout.as_secs(),
        cluster_dir().display()
    ));
    let cache = cluster_dir().join("kube-cache");
    let started = Instant::now();
    let mut ready: Vec<String> = Vec::new();
    let mut last = String::from("no answer from kubectl yet");
    let mut next_poll = Instant::now();
    loop {
        if stop() {
            return Ok(());
        }
        for n in nodes.iter_mut() {
            if let Some(status) = n.pump(false) {
                return Err(Error::Missing(format!(
                    "node {}'s emulator exited ({status}) before every node was Ready; the last lines of its \
                     console:\n{}",
                    n.name,
                    n.tail(TAIL_LINES)
                )));
            }
        }
        control_plane_alive(cp)?;
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_secs(2);
            match readiness(&opts.kubectl, &admin_kubeconfig(), &cache) {
                Ok(states) => {
                    for (name, state) in &states {
                        if state == "True" && !ready.contains(name) && nodes.iter().any(|n| &n.name == name) {
                            say(&format!("node {name} is Ready ({} s)", started.elapsed().as_secs()));
                            ready.push(name.clone());
                        }
                    }
                    last =
                        states.iter().map(|(n, s)| format!("{n} Ready={s}")).collect::<Vec<_>>().join(", ");
                    if last.is_empty() {
                        last = "no node registered".into();
                    }
                }
                Err(e) => last = e,
            }
            if nodes.iter().all(|n| ready.contains(&n.name)) {
                return Ok(());
            }
        }
        if started.elapsed() >= opts.ready_timeout {
            let mut msg = format!(
                "not every node was Ready within {} s (kubectl: {last})",
                opts.ready_timeout.as_secs()
            );
            for n in nodes.iter().filter(|n| !ready.contains(&n.name)) {
                msg.push_str(&format!(
                    "\nnode {} is not Ready; the last lines of its console ({}):\n{}",
                    n.name,
                    n.log_path.display(),
                    n.tail(TAIL_LINES)
                ));
            }
            return Err(Error::Missing(msg));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// An error with the tail of its log once the control plane has exited.
fn control_plane_alive(cp: &mut ControlPlane) -> Result<(), Error> {
    match cp.exited() {
        None => Ok(()),
        Some(status) => Err(Error::Missing(format!(
            "the control plane exited ({status}); its log:\n{}",
            tail_file(&cp.log, TAIL_LINES)
        ))),
    }
}

/// Echoes the consoles until `stop()` (or, with a job, keeps them in their logs and moves the
/// job along until it is over). A node whose emulator ends is reported and the others run
/// on. A control plane that exits is reported and started again on the same state directory
/// and port, at most [`CONTROL_PLANE_RESTARTS`] times in a run; past that the run ends with
/// an error.
fn follow(
    cp: &mut ControlPlane,
    nodes: &mut [Node],
    stop: &dyn Fn() -> bool,
    mut job: Option<(&mut Job, &Path)>,
) -> Result<(), Error> {
    let mut restarts = 0;
    while !stop() {
        if let Some((j, kubeconfig)) = job.as_mut() {
            if let Some(done) = j.step(kubeconfig) {
                return done;
            }
        }
        for n in nodes.iter_mut() {
            if let Some(status) = n.pump(job.is_none()) {
                say(&format!(
                    "node {}'s emulator (pid {}) exited ({status}); the others run on. The last lines of its \
                     console:\n{}",
                    n.name,
                    n.machine.pid(),
                    n.tail(TAIL_LINES)
                ));
            }
        }
        if let Some(status) = cp.exited() {
            say(&format!("the control plane (pid {}) exited ({status})", cp.pid()));
            let Some(new) = restart_control_plane(cp, &mut restarts, stop)? else {
                return Ok(());
            };
            *cp = new;
            say(&format!(
                "control plane ready again: {} (pid {}, restart {restarts} of at most {CONTROL_PLANE_RESTARTS})",
                cp.url,
                cp.pid()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts an exited control plane again, counting each attempt in `restarts`: `None` when
/// the run is told to stop meanwhile, an error with the tail of its log once
/// [`CONTROL_PLANE_RESTARTS`] attempts are used up.
fn restart_control_plane(
    cp: &ControlPlane,
    restarts: &mut u32,
    stop: &dyn Fn() -> bool,
) -> Result<Option<ControlPlane>, Error> {
    loop {
        if stop() {
            return Ok(None);
        }
        if *restarts >= CONTROL_PLANE_RESTARTS {
            return Err(Error::Missing(format!(
                "the control plane exited and was restarted {restarts} time(s) already; not again. Its log \
                 ({}):\n{}",
                cp.log.display(),
                tail_file(&cp.log, TAIL_LINES)
            )));
        }
        *restarts += 1;
        say(&format!(
            "restarting the control plane on {} and port {} (restart {restarts} of at most \
             {CONTROL_PLANE_RESTARTS})",
            cp.dir.display(),
            cp.port().unwrap_or(0)
        ));
        match cp.restart() {
            Ok(new) => return Ok(Some(new)),
            Err(e) => {
                say(&format!("the control plane did not come back: {e}"));
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_a_p256_serving_certificate_its_configuration_accepts() {
        let (cert, key) = kubelet_serving_certificate("n1").unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let c = NodeBootConfig {
            node_name: "n1".into(),
            server: "https://10.0.2.100:6443".into(),
            tls_server_name: Some("127.0.0.1".into()),
            certificate_authority: cert.clone(),
            token: "n1.t".into(),
            node_ip: Some("127.0.0.1".into()),
            kubelet_port: Some(40000),
            kubelet_certificate: Some(cert),
            kubelet_key: Some(key.clone()),
            registries: Default::default(),
        };
        c.check().unwrap();
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains(&key[28..60]), "{shown}");
    }

    #[test]
    fn nodes_reach_the_api_server_through_a_forward_and_expose_their_kubelet() {
        let q = node_network(6443, 40001, false);
        assert_eq!((q.model, q.unrestricted), (NicModel::VirtioNet, false));
        assert_eq!(
            (q.guest_forwards.as_slice(), q.host_forwards.as_slice()),
            (&[(6443, 6443)][..], &[(40001, 10250)][..])
        );
        assert_eq!(reach(6443, false).server.as_deref(), Some("https://10.0.2.100:6443"));
        let b = node_network(6443, 40002, true);
        assert_eq!((b.model, b.unrestricted), (NicModel::E1000, true));
        assert!(b.guest_forwards.is_empty());
        assert_eq!(reach(6443, true).server.as_deref(), Some("https://10.0.2.2:6443"));
        assert_eq!(reach(1, true).tls_server_name.as_deref(), Some("127.0.0.1"));
        let ports = free_ports(3).unwrap();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2], "{ports:?}");
        assert_eq!(node_name(2), "n2");
    }

    #[test]
    fn an_exited_control_plane_comes_back_on_its_port_a_bounded_number_of_times() {
        let dir = std::env::temp_dir().join(format!("cluster-restart-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("control-plane.log");
        // A stand-in server: `sh -c SCRIPT cp --dir D --listen ADDR --node n1` prints the ready
        // line for the port it is given (4242 for port 0) and its arguments, then exits.
        let script = r#"port=${4##*:}; [ "$port" = 0 ] && port=4242
echo "control plane ready: https://127.0.0.1:$port"; echo "started with $*" >&2; exit 3"#;
        let program: Vec<String> = vec!["/bin/sh".into(), "-c".into(), script.into(), "cp".into()];
        let mut cp = ControlPlane::start(&program, &dir, &["n1".to_string()], &log).unwrap();
        assert_eq!(cp.url, "https://127.0.0.1:4242");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cp.exited().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(cp.exited().and_then(|s| s.code()), Some(3));
        let mut restarts = 0;
        let again = restart_control_plane(&cp, &mut restarts, &|| false).unwrap().unwrap();
        assert_eq!((again.url.as_str(), restarts), ("https://127.0.0.1:4242", 1));
        // The first start's output is kept; the restart listened on the same port. The
        // restart is over at its ready line (stdout); its stderr line may land a moment later.
        let started_lines = |t: &str| t.lines().filter(|l| l.starts_with("started with")).count();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = fs::read_to_string(&log).unwrap();
        while started_lines(&text) < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            text = fs::read_to_string(&log).unwrap();
        }
        let started: Vec<&str> = text.lines().filter(|l| l.starts_with("started with")).collect();
        assert_eq!(started.len(), 2, "{text}");
        assert!(started[0].contains("--listen 127.0.0.1:0 --node n1"), "{text}");
        assert!(
            started[1].contains(&format!("--dir {} --listen 127.0.0.1:4242 --node n1", dir.display())),
            "{text}"
        );
        // The budget is bounded, and a stop is not an error.
        let mut used = CONTROL_PLANE_RESTARTS;
        let err = restart_control_plane(&again, &mut used, &|| false).err().unwrap().to_string();
        assert!(
            err.contains("restarted 5 time(s) already; not again") && err.contains("started with"),
            "{err}"
        );
        assert!(restart_control_plane(&again, &mut restarts, &|| true).unwrap().is_none());
        assert_eq!(restarts, 1);
        drop((cp, again));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn options_are_checked() {
        let o = Options {
            nodes: 0,
            bochs: false,
            images: vec![],
            smp: 2,
            mem_mib: 512,
            ready_timeout: Duration::from_secs(1),
            control_plane: vec![],
            kubectl: "kubectl".into(),
            e1000: false,
            insecure_registries: vec![],
        };
        assert!(check(&o).unwrap_err().to_string().contains("--nodes must be 1 to 8"));
        let with = |r: &str| Options { nodes: 1, insecure_registries: vec![r.into()], ..o.clone() };
        assert_eq!(registry_ports(&with("127.0.0.1:5001")).unwrap(), [5001]);
        for bad in ["10.0.0.1:5000", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x"] {
            assert!(registry_ports(&with(bad)).is_err(), "{bad}");
        }
        assert!(check(&Options { nodes: 9, ..o.clone() }).is_err());
        assert!(check(&Options { nodes: 2, smp: 0, ..o.clone() }).is_err());
        assert!(check(&Options { nodes: 2, ..o }).is_ok());
    }
}
