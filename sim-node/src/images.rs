//! Images for sim-node: simulated (every pull succeeds at once, the default) or pulled for
//! real from their registries with kubelet-lite's registry client (`--pull-images`), each
//! pull on a thread of its own, every blob verified. Containers still run in the simulated
//! runtime: a real pull only decides whether and when they start, and what the node reports
//! (imageID, Node.status.images, the events).
//!
//! Registries are reached over TLS verified against `--registry-ca`, or over plain HTTP when
//! `--insecure-registry` names them; any other registry over HTTP is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use kubelet_lite::http::HttpError;
use kubelet_lite::image::Reference;
use kubelet_lite::registry::{self, Connector, PullOptions, Scheme};
use kubelet_lite::runtime::{
    ContainerRef, ImageInfo, LogView, PullStatus, RegistryAuth, Runtime, RuntimeError, RuntimeState,
};
use kubelet_lite::sim::SimRuntime;
use kubelet_lite::time::Time;
use kubelet_lite::types::{Container, Pod};

use crate::transport::{Endpoint, NetTransport};

/// The largest image (config and layers as stored) a pull takes by default.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 512 << 20;
/// How long a registry may stay silent before a pull gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How the node reaches registries.
#[derive(Clone, Default)]
pub struct PullConfig {
    /// Registries (`host[:port]`, as image references name them) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// The CA bundle HTTPS registries are verified against.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The most bytes one image may take.
    pub max_image_bytes: u64,
}

/// Opens connections to registries and their token servers.
pub struct RegistryConnector {
    cfg: Arc<PullConfig>,
}

/// Splits `name[:port]`, with `default` when no port is named.
fn host_port(host: &str, default: u16) -> Result<(String, u16), HttpError> {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() => port
            .parse()
            .map(|p| (name.to_string(), p))
            .map_err(|_| HttpError::Transport(format!("bad port in {host:?}"))),
        _ if !host.is_empty() => Ok((host.to_string(), default)),
        _ => Err(HttpError::Transport("no host".into())),
    }
}

impl Connector for RegistryConnector {
    type Conn = NetTransport;

    fn open(&mut self, scheme: Scheme, host: &str) -> Result<NetTransport, HttpError> {
        let (name, port, tls) = match scheme {
            Scheme::Http => {
                let (name, port) = host_port(host, 80)?;
                (name, port, None)
            }
            Scheme::Https => {
                let tls = self.cfg.tls.clone().ok_or_else(|| {
                    HttpError::Transport(format!(
                        "{host} is reached over HTTPS and the node has no CA bundle for registries \
                         (--registry-ca FILE), nor does it list {host} as insecure (--insecure-registry)"
                    ))
                })?;
                let (name, port) = host_port(host, 443)?;
                (name, port, Some(tls))
            }
        };
        Ok(NetTransport::new(Endpoint { host: name, port, tls }, Some(READ_TIMEOUT)))
    }
}

type Slot = Arc<Mutex<Option<Result<ImageInfo, String>>>>;

/// Pulls from registries, and the images pulled.
pub struct Registries {
    cfg: Arc<PullConfig>,
    /// Pulls under way, by normalised reference.
    pulls: HashMap<String, Slot>,
    images: Vec<ImageInfo>,
}

impl Registries {
    /// No images yet.
    pub fn new(cfg: PullConfig) -> Self {
        Registries { cfg: Arc::new(cfg), pulls: HashMap::new(), images: Vec::new() }
    }

    fn find(&self, reference: &str) -> Option<&ImageInfo> {
        self.images.iter().find(|i| i.names.iter().any(|n| n == reference))
    }

    /// Keeps `info`: the names it answers to leave the other images that had them (a tag
    /// that moved), and an image left with no name is forgotten. An image already held (the
    /// same id, pulled again by digest or by another tag) keeps its names and gains the new
    /// ones.
    fn keep(&mut self, info: ImageInfo) {
        for i in self.images.iter_mut().filter(|i| i.id != info.id) {
            i.names.retain(|n| !info.names.contains(n));
        }
        self.images.retain(|i| !i.names.is_empty());
        match self.images.iter_mut().find(|i| i.id == info.id) {
            Some(held) => {
                for n in info.names {
                    if !held.names.contains(&n) {
                        held.names.push(n);
                    }
                }
                held.size_bytes = info.size_bytes;
            }
            None => self.images.push(info),
        }
    }

    fn start(&self, reference: Reference, auth: &[RegistryAuth]) -> Slot {
        let slot: Slot = Arc::default();
        let mut opts = PullOptions::new(
            registry::scheme_for(&reference.registry, &self.cfg.insecure),
            self.cfg.max_image_bytes,
        );
        opts.credentials = auth
            .iter()
            .find(|a| a.registry == reference.registry)
            .map(|a| (a.username.clone(), a.password.clone()));
        let (cfg, out) = (self.cfg.clone(), slot.clone());
        thread::spawn(move || {
            let mut connector = RegistryConnector { cfg };
            let result = registry::pull(&mut connector, &reference, &opts).map(|image| image.info());
            let result = result.map_err(|e| e.to_string());
            *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        });
        slot
    }

    fn pull(&mut self, image: &str, auth: &[RegistryAuth]) -> PullStatus {
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(e) => return PullStatus::Failed(format!("invalid image reference: {e}")),
        };
        let key = reference.to_string();
        let slot = match self.pulls.get(&key) {
            Some(slot) => slot.clone(),
            None => {
                let slot = self.start(reference, auth);
                self.pulls.insert(key.clone(), slot);
                return PullStatus::Pulling;
            }
        };
        let done = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        match done {
            None => PullStatus::Pulling,
            Some(result) => {
                self.pulls.remove(&key);
                match result {
                    Ok(info) => {
                        self.keep(info.clone());
                        PullStatus::Pulled(info)
                    }
                    Err(why) => PullStatus::Failed(why),
                }
            }
        }
    }
}

/// The simulated runtime, with images simulated or pulled.
pub struct NodeRuntime {
    /// Where containers run.
    pub sim: SimRuntime,
    /// Real pulls, when the node makes them.
    pub registries: Option<Registries>,
}

impl NodeRuntime {
    /// Containers in `sim`, images pulled through `registries` (or simulated with `None`).
    pub fn new(registries: Option<Registries>) -> Self {
        NodeRuntime { sim: SimRuntime::new(), registries }
    }
}

impl Runtime for NodeRuntime {
    fn start_container(
        &mut self,
        c: &ContainerRef,
        pod: &Pod,
        spec: &Container,
        now: Time,
    ) -> Result<String, RuntimeError> {
        self.sim.start_container(c, pod, spec, now)
    }

    fn stop_container(&mut self, id: &str, grace_secs: u64, now: Time) {
        self.sim.stop_container(id, grace_secs, now)
    }

    fn poll(&mut self, id: &str, now: Time) -> Option<RuntimeState> {
        self.sim.poll(id, now)
    }

    fn remove_pod(&mut self, pod_uid: &str) {
        self.sim.remove_pod(pod_uid)
    }

    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<LogView> {
        self.sim.logs(namespace, pod, container, previous)
    }

    fn image_status(&self, image: &str) -> Option<ImageInfo> {
        match &self.registries {
            None => self.sim.image_status(image),
            Some(r) => r.find(&Reference::parse(image).ok()?.to_string()).cloned(),
        }
    }

    fn pull_image(&mut self, image: &str, auth: &[RegistryAuth], now: Time) -> PullStatus {
        match &mut self.registries {
            None => self.sim.pull_image(image, auth, now),
            Some(r) => r.pull(image, auth),
        }
    }

    fn list_images(&self) -> Vec<ImageInfo> {
        match &self.registries {
            None => self.sim.list_images(),
            Some(r) => r.images.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(host_port("127.0.0.1:5000", 80).unwrap(), ("127.0.0.1".into(), 5000));
        assert_eq!(host_port("registry.example", 443).unwrap(), ("registry.example".into(), 443));
        assert!(host_port("x:notaport", 80).is_err());
        assert!(host_port("", 80).is_err());
    }

    #[test]
    fn https_without_a_ca_bundle_is_refused_with_a_reason() {
        let mut c = RegistryConnector { cfg: Arc::new(PullConfig::default()) };
        let Err(HttpError::Transport(why)) = c.open(Scheme::Https, "registry.example") else {
            panic!("connected without a CA bundle")
        };
        assert!(why.contains("--registry-ca") && why.contains("--insecure-registry"), "{why}");
        assert!(c.open(Scheme::Http, "127.0.0.1:5000").is_ok());
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image() {
        let mut r = Registries::new(PullConfig::default());
        let img = |id: &str, names: &[&str]| ImageInfo {
            names: names.iter().map(|n| n.to_string()).collect(),
            id: id.into(),
            size_bytes: 1,
        };
        r.keep(img("a", &["x:1", "x@a"]));
        r.keep(img("b", &["x:1", "x@b"]));
        assert_eq!(r.find("x:1").map(|i| i.id.as_str()), Some("b"));
        assert_eq!(r.find("x@a").map(|i| i.names.clone()), Some(vec!["x@a".to_string()]));
        r.keep(img("c", &["x@a"]));
        assert_eq!(r.images.len(), 2, "an image with no name left is forgotten");
    }

    #[test]
    fn the_same_image_pulled_by_another_name_keeps_the_names_it_had() {
        let mut r = Registries::new(PullConfig::default());
        let img = |names: &[&str]| ImageInfo {
            names: names.iter().map(|n| n.to_string()).collect(),
            id: "x@sha256:a".into(),
            size_bytes: 7,
        };
        r.keep(img(&["x:1", "x@sha256:a"]));
        // By digest (with pull policy Always), then by a second tag of the same manifest.
        r.keep(img(&["x@sha256:a"]));
        r.keep(img(&["x:2", "x@sha256:a"]));
        assert_eq!(r.images.len(), 1);
        assert_eq!(r.images[0].names, ["x:1", "x@sha256:a", "x:2"]);
        for name in ["x:1", "x:2", "x@sha256:a"] {
            assert_eq!(r.find(name).map(|i| i.id.as_str()), Some("x@sha256:a"), "{name}");
        }
    }
}
