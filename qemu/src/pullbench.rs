//! `cargo xtask bench --only pull`: a hypervisor node pulling images from a registry, against
//! the host pulling the same images from the same registry in the same run. Figures are
//! printed, never judged.
//!
//! The section starts a registry ([`crate::registry::Registry`], a free port, storage under
//! `target/bench-pull/`) holding two images pushed with skopeo: `busybox:1`, the busybox
//! demo image, and `big:1`, the same busybox layer under a second layer of
//! [`NOISE_BYTES`] of incompressible bytes (a fixed PRNG, [`noise`]). The host baseline is
//! `skopeo copy --src-tls-verify=false docker://127.0.0.1:PORT/IMAGE oci:DIR` into a fresh
//! directory, timed from the process's start to its end. Then one control plane and one
//! QEMU node booted as `cluster up` boots one (its module pack carries the busybox image
//! bundle, whose crx-guest runs the pulled images), whose configuration names the registry
//! as insecure (`cluster::use_registry`). Each round applies, one after the other, bound to
//! the node:
//!
//! - a pod of `busybox:1` with `imagePullPolicy: Always`, and one of `big:1` the same way:
//!   each makes the node pull, and its `node: pulled REF: C bytes from the registry in T ms,
//!   ...` console line gives the pull's time inside the node and the registry bytes;
//! - a pod of `big:1` with `imagePullPolicy: IfNotPresent`, which the node starts from the
//!   image it holds (its event says `already present on machine`).
//!
//! For every pod it times `kubectl apply` (its start) to the first `kubectl get pods
//! --watch` event with phase Running; each pod is deleted, and gone, before the next.

use crate::cluster;
use crate::emulator::Qemu;
use crate::image::target_dir;
use crate::machine::Machine;
use crate::node::{self, NodeImage};
use crate::nodebench::{self, check_stop, pause, Ctx, Row, Watch};
use crate::oci::{self, RunConfig, TarEntry};
use crate::registry::{Format, Registry};
use crate::Error;
use regex::Regex;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

/// The size of `big:1`'s second layer's one file.
pub const NOISE_BYTES: usize = 4 << 20;
/// How long a pod may take from apply to Running (a pull included).
pub const POD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a deleted pod may take to be gone.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cached pod's event may take to reach the API server after it is Running.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one host `skopeo copy` may take.
pub const SKOPEO_TIMEOUT: Duration = Duration::from_secs(120);
/// What the message of a pod's event says when its image was not pulled.
pub const CACHED_EVENT: &str = "already present on machine";
/// What every pod's container prints first (and then it sleeps).
pub const MARKER: &str = "bench: pulled image runs";

/// What the pull section runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds on the node (each pulls both images and starts one cached pod), and host
    /// copies of each image.
    pub runs: usize,
    /// CPUs of the QEMU node.
    pub smp: u32,
    /// Memory of the QEMU node, MiB.
    pub mem_mib: u32,
    /// The kernel.
    pub kernel: PathBuf,
    /// The program and first arguments that serve the control plane (`xtask control-plane`).
    pub control_plane: Vec<String>,
    /// kubectl.
    pub kubectl: PathBuf,
}

/// `len` bytes of a fixed xorshift64* stream from `seed`: the same every run, and as good
/// as incompressible for gzip.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What one `node: pulled` console line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The reference pulled, as the node normalises it.
    pub reference: String,
    /// What came from the registry: the config and the compressed layers.
    pub registry_bytes: u64,
    /// From the pull's start inside the node to its last blob fetched, verified and
    /// inflated into the frames the node holds it in.
    pub ms: u64,
    /// The inflated layers the node holds.
    pub held_bytes: u64,
    /// The frames that hold them.
    pub frames: u64,
    /// `REPO@sha256:...`.
    pub repo_digest: String,
}

/// Reads a `node: pulled REF: C bytes from the registry in T ms, held inflated as N bytes
/// in F frames: REPO@sha256:...` line (anywhere in the console line).
pub fn pulled_line(line: &str) -> Option<Pulled> {
    static PULLED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"node: pulled (\S+): (\d+) bytes from the registry in (\d+) ms, held inflated as (\d+) bytes in (\d+) frames: (\S+)\s*$",
        )
        .expect("the pulled pattern is valid")
    });
    let c = PULLED.captures(line)?;
    let n = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<u64>().ok());
    Some(Pulled {
        reference: c.get(1)?.as_str().to_string(),
        registry_bytes: n(2)?,
        ms: n(3)?,
        held_bytes: n(4)?,
        frames: n(5)?,
        repo_digest: c.get(6)?.as_str().to_string(),
    })
}

/// A pod of `image` on `node` with `policy`, bound by `nodeName`, one container without
/// limits (a 64 MiB pod VM) that prints [`MARKER`] and sleeps.
pub fn pod_manifest(name: &str, node: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  \
         containers:\n  - {{name: main, image: \"{image}\", imagePullPolicy: {policy}, \
         command: [sh, -c, \"echo {MARKER}; sleep 3600\"]}}\n"
    )
}

/// One image's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRun {
    /// `busybox:1`.
    pub tag: String,
    /// What the registry serves of it: the config and the layer blobs, bytes.
    pub registry_bytes: u64,
    /// Each host `skopeo copy`, from its start to its end.
    pub host: Vec<Duration>,
    /// Each node pull's console line.
    pub node: Vec<Pulled>,
    /// Apply -> Running of each pod that pulled it.
    pub pulled_running: Vec<Duration>,
}

/// Everything the section measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// `busybox:1`, then `big:1`.
    pub images: Vec<ImageRun>,
    /// Apply -> Running of each pod of `big:1` started from the image the node held.
    pub cached_running: Vec<Duration>,
    /// How many of those pods had a `Pulled` event saying [`CACHED_EVENT`].
    pub cached_events: usize,
    /// One such event's message.
    pub cached_event: Option<String>,
    /// Power-on to Ready in kubectl.
    pub ready: Option<Duration>,
    /// What ended the section early.
    pub failed: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// MiB per second of `bytes` in `d`.
fn mib_per_s(bytes: u64, d: Duration) -> Option<f64> {
    let s = d.as_secs_f64();
    // Byte counts far below 2^53: the conversion is exact.
    (s > 0.0).then(|| bytes as f64 / MIB / s)
}

/// The rows: per image the host's copy and the node's pull (time and throughput, the node
/// against the host), the pods that pulled it; then the cached pods against the pulling
/// ones of `big:1`.
pub fn rows(f: &Figures) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    // Adds a row; its index, for the rows measured against it.
    fn add(
        rows: &mut Vec<Row>,
        figure: String,
        values: Vec<f64>,
        decimals: usize,
        baseline: Option<usize>,
    ) -> usize {
        rows.push(Row { figure, values, decimals, baseline });
        rows.len() - 1
    }
    let secs = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let mut last_pulling = None;
    for i in &f.images {
        let t = &i.tag;
        let host = add(&mut rows, format!("host: skopeo copy {t} to an oci: dir, s"), secs(&i.host), 3, None);
        let node_pulls: Vec<Duration> = i.node.iter().map(|p| Duration::from_millis(p.ms)).collect();
        add(
            &mut rows,
            format!("node: pull {t} (its `node: pulled` line), s"),
            secs(&node_pulls),
            3,
            Some(host),
        );
        let host_rate = add(
            &mut rows,
            format!("host: {t} registry bytes / copy time, MiB/s"),
            i.host.iter().filter_map(|d| mib_per_s(i.registry_bytes, *d)).collect(),
            2,
            None,
        );
        add(
            &mut rows,
            format!("node: {t} registry bytes / pull time, MiB/s"),
            i.node.iter().filter_map(|p| mib_per_s(p.registry_bytes, Duration::from_millis(p.ms))).collect(),
            2,
            Some(host_rate),
        );
        last_pulling = Some(add(
            &mut rows,
            format!("node: apply -> Running, {t} pulled (Always), s"),
            secs(&i.pulled_running),
            3,
            None,
        ));
    }
    let tag = f.images.last().map_or("big:1", |i| i.tag.as_str());
    add(
        &mut rows,
        format!("node: apply -> Running, {tag} cached (IfNotPresent), s"),
        secs(&f.cached_running),
        3,
        last_pulling,
    );
    rows
}

/// Times `skopeo copy` of `reference` from the registry into a fresh `out` directory.
fn host_copy(reference: &str, out: &Path, log: &Path) -> Result<Duration, Error> {
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| Error::io(format!("clearing {}", out.display()), e))?;
    }
    let log_file = fs::File::create(log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}", out.display()))
        .env("REGISTRY_AUTH_FILE", out.with_extension("no-auth.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    let what = format!("skopeo copy docker://{reference} oci:{}", out.display());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {what}"), e))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() < SKOPEO_TIMEOUT => thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Missing(format!("{what} did not end within {SKOPEO_TIMEOUT:?}")));
            }
        }
    };
    let took = started.elapsed();
    if status.success() {
        Ok(took)
    } else {
        Err(Error::Helper {
            what: format!("{what} failed with {status}"),
            log: fs::read_to_string(log).unwrap_or_default(),
        })
    }
}

/// `big:1`'s layout at `out`: the busybox layer, then `data/noise.bin` of [`NOISE_BYTES`].
fn build_big_image(busybox: &[u8], out: &Path) -> Result<(), Error> {
    let bad = |e: oci::ImageError| Error::Missing(format!("building the big image: {e}"));
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| Error::io(format!("clearing {}", out.display()), e))?;
    }
    let noise = noise(NOISE_BYTES, 0x5eed);
    let data =
        oci::tar_entries(&[TarEntry::Dir("data", 0o755), TarEntry::File("data/noise.bin", 0o644, &noise)])
            .map_err(bad)?;
    let run = RunConfig {
        entrypoint: None,
        cmd: Some(vec!["sh".into()]),
        env: Some(vec!["PATH=/bin:/usr/bin".into()]),
        working_dir: Some("/".into()),
    };
    oci::write_layout(out, &[oci::busybox_layer(busybox).map_err(bad)?, data], run).map_err(bad)?;
    Ok(())
}

/// The bytes a pull of `tag` fetches besides the manifest: its config and layer blobs.
fn registry_bytes(registry: &Registry, tag: &str) -> Result<u64, Error> {
    let (repo, reference) = tag.split_once(':').unwrap_or((tag, "latest"));
    let reply = registry.manifest(repo, reference)?;
    let m: oci::Manifest = serde_json::from_slice(&reply.body)
        .map_err(|e| Error::Missing(format!("the registry's manifest of {tag}: {e}")))?;
    Ok(m.layers.iter().fold(m.config.size, |sum, l| sum.saturating_add(l.size)))
}

/// `target/bench-pull/`: the registry, the layouts, the control plane's state, manifests,
/// the node's console.
pub fn bench_dir() -> PathBuf {
    target_dir().join("bench-pull")
}

/// Runs the section. Errors are what kept it from starting; a failure later ends it with
/// `failed` set and what was measured before kept. `Err(Interrupted)` once `stop()` says so,
/// with everything started stopped.
pub fn run(opts: &Options, stop: &dyn Fn() -> bool) -> Result<Figures, Error> {
    let dir = bench_dir();
    eprintln!("bench: pull: building crx-guest, the busybox image bundle and the big image");
    let built = (|| -> Result<_, Error> {
        let image = NodeImage::from_arg("busybox")?;
        let guest = crate::pod::build_guest_kernel()?;
        let elf = fs::read(&guest).map_err(|e| Error::io(format!("reading {}", guest.display()), e))?;
        let busybox = fs::read(crate::setup::BUSYBOX_PATH)
            .map_err(|e| Error::io(format!("reading {}", crate::setup::BUSYBOX_PATH), e))?;
        let big = dir.join("images").join("big");
        build_big_image(&busybox, &big)?;
        Ok((vec![image.bundle(&elf)?], image.dir, big))
    })();
    let (bundles, busybox_dir, big_dir) = match built {
        Ok(b) => b,
        // A Ctrl-C reaches cargo too, whose build then fails.
        Err(_) if stop() => return Err(Error::Interrupted),
        Err(e) => return Err(e),
    };
    check_stop(stop)?;
    let reg_dir = dir.join("registry");
    if reg_dir.exists() {
        fs::remove_dir_all(&reg_dir).map_err(|e| Error::io(format!("clearing {}", reg_dir.display()), e))?;
    }
    let registry = Registry::start(&reg_dir, None, None)?;
    let mut figures = Figures::default();
    for (layout, tag) in [(&busybox_dir, "busybox:1"), (&big_dir, "big:1")] {
        registry.push(layout, tag, Format::Oci)?;
        let bytes = registry_bytes(&registry, tag)?;
        figures.images.push(ImageRun { tag: tag.into(), registry_bytes: bytes, ..ImageRun::default() });
    }
    eprintln!("bench: pull: registry {} holding busybox:1 and big:1", registry.addr());

    let result = (|| -> Result<(), Error> {
        for round in 1..=opts.runs {
            for i in figures.images.iter_mut() {
                check_stop(stop)?;
                let reference = format!("{}/{}", registry.addr(), i.tag);
                let name = i.tag.replace(':', "-");
                let out = dir.join("host").join(format!("{name}-{round}"));
                let log = dir.join("host").join(format!("{name}-{round}.log"));
                fs::create_dir_all(dir.join("host"))
                    .map_err(|e| Error::io(format!("creating {}", dir.join("host").display()), e))?;
                let took = host_copy(&reference, &out, &log)?;
                eprintln!("bench: pull: host copy {round} of {reference}: {took:?}");
                i.host.push(took);
            }
        }
        on_node(opts, &dir, &bundles, &registry, &mut figures, stop)
    })();
    drop(registry);
    match result {
        Ok(()) => Ok(figures),
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(_) if stop() => Err(Error::Interrupted),
        Err(e) => {
            figures.failed = Some(e.to_string());
            Ok(figures)
        }
    }
}

/// The node's part: a control plane, the node, its rounds of pods.
fn on_node(
    opts: &Options,
    dir: &Path,
    bundles: &[Vec<u8>],
    registry: &Registry,
    figures: &mut Figures,
    stop: &dyn Fn() -> bool,
) -> Result<(), Error> {
    let name = "bench-pull1";
    let state = dir.join("control-plane");
    if state.exists() {
        fs::remove_dir_all(&state).map_err(|e| Error::io(format!("clearing {}", state.display()), e))?;
    }
    fs::create_dir_all(&state).map_err(|e| Error::io(format!("creating {}", state.display()), e))?;
    let (cp, ctx, mut nodes, mut pods) =
        nodebench::start_watched(&opts.control_plane, &opts.kubectl, dir, &[name.to_string()], "pull")?;
    let api_port = cp.port()?;

    let kubeconfig = state.join("nodes").join(format!("{name}.kubeconfig"));
    let kubelet_port =
        *cluster::free_ports(1)?.first().ok_or_else(|| Error::Missing("no free port".into()))?;
    let mut cfg = cluster::node_config(&kubeconfig, name, api_port, kubelet_port, false, None)?;
    let mut net = cluster::node_network(api_port, kubelet_port, false);
    cluster::use_registry(&mut cfg, &mut net, registry.port(), false);
    let pack = node::write_boot_pack(&cfg, bundles)?;
    let q = Qemu {
        smp: opts.smp,
        mem_mib: opts.mem_mib,
        initrd: Some(pack),
        net: Some(net),
        ..Qemu::new(&opts.kernel)
    };
    let mut machine = Machine::qemu(name, &q)?;
    let mut node = OnNode { ctx: &ctx, pods: &mut pods, node: name, stop };
    let result = (|| -> Result<(), Error> {
        let started = machine.started();
        {
            let mut alive = || match machine.finished() {
                None => Ok(()),
                Some(status) => Err(Error::Missing(format!("the emulator exited ({status})"))),
            };
            figures.ready = Some(nodebench::wait_ready(&mut nodes, name, started, &mut alive, stop)?);
        }
        eprintln!("bench: pull: {name} Ready after {:?}", figures.ready.unwrap_or_default());
        for round in 1..=opts.runs {
            for i in figures.images.iter_mut() {
                let reference = format!("{}/{}", registry.addr(), i.tag);
                let pod = format!("pull-{}-{round}", i.tag.replace(':', "-"));
                let (running, pulled) = node.pod(&pod, &reference, "Always", &machine)?;
                eprintln!("bench: pull: {pod}: Running after {running:?}, {pulled:?}");
                i.pulled_running.push(running);
                i.node.extend(pulled);
                node.delete(&pod)?;
            }
            let Some(big) = figures.images.last() else { break };
            let reference = format!("{}/{}", registry.addr(), big.tag);
            let pod = format!("cached-{}-{round}", big.tag.replace(':', "-"));
            let (running, pulled) = node.pod(&pod, &reference, "IfNotPresent", &machine)?;
            if let Some(p) = pulled {
                return Err(Error::Missing(format!("{pod} (IfNotPresent) made the node pull again: {p:?}")));
            }
            let event = node.cached_event(&pod)?;
            eprintln!("bench: pull: {pod}: Running after {running:?}, event {event:?}");
            figures.cached_running.push(running);
            if let Some(e) = event {
                figures.cached_events += 1;
                figures.cached_event.get_or_insert(e);
            }
            node.delete(&pod)?;
        }
        Ok(())
    })();
    let console = dir.join(format!("{name}.console.log"));
    let outcome = machine.stop();
    let _ = fs::write(&console, crate::machine::format_log(name, &outcome.lines));
    drop(cp);
    result.map_err(|e| match e {
        Error::Interrupted => e,
        e => Error::Missing(format!("{name}: {e} (console: {})", console.display())),
    })
}

/// What a step on the node needs.
struct OnNode<'a> {
    ctx: &'a Ctx,
    pods: &'a mut Watch,
    node: &'a str,
    stop: &'a dyn Fn() -> bool,
}

impl OnNode<'_> {
    /// Applies pod `pod` of `image` with `policy` and waits for it to be Running; with
    /// `Always`, also for the node's `node: pulled` line of it printed after the apply.
    /// Returns apply -> Running and that line (any line of the image printed after the
    /// apply, whatever the policy).
    fn pod(
        &mut self,
        pod: &str,
        image: &str,
        policy: &str,
        machine: &Machine,
    ) -> Result<(Duration, Option<Pulled>), Error> {
        let file = self.ctx.dir.join(format!("{pod}.yaml"));
        fs::write(&file, pod_manifest(pod, self.node, image, policy))
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let file_arg = file.display().to_string();
        let applied = Instant::now();
        self.ctx.kubectl(&["apply", "-f", &file_arg]).map_err(Error::Missing)?;
        let deadline = applied + POD_TIMEOUT;
        let mut running = None;
        loop {
            check_stop(self.stop)?;
            self.pods.poll()?;
            if running.is_none() {
                running = self.pods.first(pod, "Running").map(|at| at.saturating_duration_since(applied));
                for bad in ["Failed", "Succeeded"] {
                    if self.pods.first(pod, bad).is_some() {
                        return Err(Error::Missing(format!("pod {pod} ended ({bad}) before Running")));
                    }
                }
            }
            let pulled = machine
                .lines()
                .into_iter()
                .filter(|l| l.console && machine.started() + l.at >= applied)
                .filter_map(|l| pulled_line(&l.text))
                .find(|p| p.reference == image);
            if let Some(r) = running {
                if pulled.is_some() || policy != "Always" {
                    return Ok((r, pulled));
                }
            }
            if Instant::now() >= deadline {
                let waiting = self
                    .ctx
                    .kubectl(&[
                        "get",
                        "pod",
                        pod,
                        "-o",
                        "jsonpath={.status.containerStatuses[0].state.waiting.reason}: \
                         {.status.containerStatuses[0].state.waiting.message}",
                    ])
                    .unwrap_or_else(|e| e);
                return Err(Error::Missing(format!(
                    "pod {pod} ({image}, {policy}): not Running{} within {POD_TIMEOUT:?} (waiting: {})",
                    if policy == "Always" { " with its `node: pulled` line" } else { "" },
                    waiting.trim()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The message of `pod`'s `Pulled` event saying [`CACHED_EVENT`], once it is there
    /// (`None` after [`EVENT_TIMEOUT`]).
    fn cached_event(&mut self, pod: &str) -> Result<Option<String>, Error> {
        let selector = format!("involvedObject.name={pod}");
        let template = r#"jsonpath={range .items[*]}{.reason}={.message}{"\n"}{end}"#;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            check_stop(self.stop)?;
            if let Ok(out) =
                self.ctx.kubectl(&["get", "events", "--field-selector", &selector, "-o", template])
            {
                let found = out.lines().find_map(|l| {
                    let (reason, message) = l.split_once('=')?;
                    (reason == "Pulled" && message.contains(CACHED_EVENT)).then(|| message.to_string())
                });
                if found.is_some() {
                    return Ok(found);
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            pause(Duration::from_millis(250), self.stop)?;
        }
    }

    /// Deletes `pod` and waits until the API server no longer has it.
    fn delete(&mut self, pod: &str) -> Result<(), Error> {
        let timeout = format!("--timeout={}s", DELETE_TIMEOUT.as_secs());
        self.ctx.kubectl(&["delete", "pod", pod, "--wait=true", &timeout]).map_err(Error::Missing)?;
        check_stop(self.stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_fixed_and_does_not_compress() {
        let a = noise(1 << 16, 7);
        assert_eq!(a.len(), 1 << 16);
        assert_eq!(a, noise(1 << 16, 7), "the same every run");
        assert_ne!(a, noise(1 << 16, 8));
        assert_eq!(noise(5, 7), a[..5]);
        let z = oci::gzip(&a).unwrap();
        assert!(z.len() >= a.len(), "gzip takes {} bytes to {}", a.len(), z.len());
    }

    #[test]
    fn the_nodes_pulled_line_is_read() {
        let line = "node: pulled 127.0.0.1:40123/big:1: 5243516 bytes from the registry in 2345 ms, held \
                    inflated as 6303744 bytes in 1540 frames: 127.0.0.1:40123/big@sha256:abcd";
        let want = Pulled {
            reference: "127.0.0.1:40123/big:1".into(),
            registry_bytes: 5_243_516,
            ms: 2345,
            held_bytes: 6_303_744,
            frames: 1540,
            repo_digest: "127.0.0.1:40123/big@sha256:abcd".into(),
        };
        assert_eq!(pulled_line(line), Some(want.clone()));
        assert_eq!(pulled_line(&format!("[  1.2] {line}\r")), Some(want), "anywhere in the line");
        assert_eq!(pulled_line("node: pulled x: lots bytes from the registry in 1 ms, held inflated as 1 bytes in 1 frames: y"), None);
        assert_eq!(pulled_line("node: registered bench-pull1 (uid 1)"), None);
    }

    #[test]
    fn the_pod_names_its_image_and_policy() {
        let m = pod_manifest("pull-big-1-1", "bench-pull1", "127.0.0.1:5000/big:1", "Always");
        assert!(m.contains("name: pull-big-1-1}"), "{m}");
        assert!(m.contains("nodeName: bench-pull1\n"), "{m}");
        assert!(m.contains("image: \"127.0.0.1:5000/big:1\", imagePullPolicy: Always,"), "{m}");
        assert!(m.contains(&format!("\"echo {MARKER}; sleep 3600\"")), "{m}");
        assert!(!m.contains("limits"), "{m}");
    }

    #[test]
    fn rows_set_the_node_against_the_host() {
        let pulled = |ms| Pulled {
            reference: "r".into(),
            registry_bytes: 4 << 20,
            ms,
            held_bytes: 0,
            frames: 0,
            repo_digest: "d".into(),
        };
        let s = Duration::from_millis;
        let image = |tag: &str| ImageRun {
            tag: tag.into(),
            registry_bytes: 4 << 20,
            host: vec![s(500), s(250)],
            node: vec![pulled(2000), pulled(4000)],
            pulled_running: vec![s(5000)],
        };
        let f = Figures {
            images: vec![image("busybox:1"), image("big:1")],
            cached_running: vec![s(1000), s(2000)],
            ..Figures::default()
        };
        let r = rows(&f);
        assert_eq!(r.len(), 11);
        assert_eq!(r[0].figure, "host: skopeo copy busybox:1 to an oci: dir, s");
        assert_eq!(r[1].baseline, Some(0));
        assert_eq!(r[1].values, [2.0, 4.0]);
        assert_eq!(r[2].values, [8.0, 16.0], "host MiB/s");
        assert_eq!((r[3].values.clone(), r[3].baseline), (vec![2.0, 1.0], Some(2)));
        assert_eq!(r[6].baseline, Some(5), "big's pull against big's copy");
        assert_eq!(r[10].figure, "node: apply -> Running, big:1 cached (IfNotPresent), s");
        assert_eq!((r[10].values.clone(), r[10].baseline), (vec![1.0, 2.0], Some(9)), "against big's pulls");
        let t = nodebench::table(&r, 1);
        assert!(t.lines().nth(11).unwrap_or_default().ends_with("0.30 x #10"), "{t}");
    }
}
