//! Fuzz targets for every parser that takes untrusted bytes: what a node or a client sends the
//! control plane, and what a server sends kubelet-lite. Each target is a `fn(&[u8])` whose
//! contract is "never panics, whatever the input"; errors are fine.
//!
//! Two harnesses drive them: `tests/corpus.rs` runs every target over its seed corpus
//! (`corpus/<target>/`) and a fixed-seed series of mutations of it under plain `cargo test`,
//! and `libfuzzer/` is a cargo-fuzz project for coverage-guided runs on a nightly toolchain
//! (`cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer http_response fuzz/corpus/http_response`).

use control_plane::api::Api;
use control_plane::patch::{
    apply_json_patch, apply_merge_patch, apply_strategic_merge_patch, k8s_merge_keys,
};
use control_plane::selector::{FieldSelector, LabelSelector};
use control_plane::server::http::read_request;
use control_plane::store::Store;
use kubelet_lite::agent::{Agent, NodeConfig, Op};
use kubelet_lite::http::{Limits, LineDecoder, ResponseParser};
use kubelet_lite::logs::LogRequest;
use kubelet_lite::sim::SimRuntime;
use kubelet_lite::time::Time;
use kubelet_lite::types::{NodeSystemInfo, Pod, PodList, Status, WatchEvent};
use serde_json::Value;
use std::collections::BTreeMap;

/// A target: its name (the corpus directory) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 11] = [
    ("http_response", http_response),
    ("watch_lines", watch_lines),
    ("agent_replies", agent_replies),
    ("http_request", http_request),
    ("api_request", api_request),
    ("patch", patch),
    ("selectors", selectors),
    ("log_request", log_request),
    ("protobuf", protobuf),
    ("registry_manifest", registry_manifest),
    ("pull_secrets", pull_secrets),
];

/// kubelet-lite's reading of an image pull secret: the Secret as the API server returns it,
/// and the same bytes as a `~/.docker/config.json`, a `~/.dockercfg` and a server name.
pub fn pull_secrets(data: &[u8]) {
    use kubelet_lite::pullsecrets;
    let _ = pullsecrets::registry_auths(data);
    let _ = pullsecrets::docker_config_json(data);
    let _ = pullsecrets::dockercfg(data);
    let text = String::from_utf8_lossy(data);
    let _ = pullsecrets::registry_of(&text);
    let _ = pullsecrets::valid_secret_name(&text);
}

/// kubelet-lite's registry manifest and index parser (the first byte picks the response's
/// Content-Type), platform choice and layer kinds; the image config parser and the
/// `WWW-Authenticate` and token parsers on the same bytes.
pub fn registry_manifest(data: &[u8]) {
    use kubelet_lite::registry::{auth, manifest};
    let (kind, body) = data.split_first().map_or((0, data), |(k, b)| (*k, b));
    let content_type = match kind % 7 {
        0 => None,
        1 => Some(manifest::OCI_INDEX),
        2 => Some(manifest::OCI_MANIFEST),
        3 => Some(manifest::DOCKER_LIST),
        4 => Some(manifest::DOCKER_MANIFEST),
        5 => Some("application/json"),
        _ => Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    };
    match manifest::parse_manifest(content_type, body) {
        Ok(manifest::Parsed::Index(m)) => {
            let _ = manifest::choose_platform(&m).map(|d| d.digest.len());
        }
        Ok(manifest::Parsed::Manifest { config, layers }) => {
            let _ = manifest::layer_kind(&config.media_type);
            for l in &layers {
                let _ = manifest::layer_kind(&l.media_type);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = manifest::parse_config(body);
    let _ = auth::parse_token(body);
    let text = String::from_utf8_lossy(body);
    if let Ok(auth::Challenge::Bearer { realm, .. }) = auth::parse_challenge(&text) {
        let _ = auth::parse_realm(&realm, kubelet_lite::registry::Scheme::Https);
    }
}

/// kubelet-lite's HTTP/1.1 response parser, fed in two pieces split at the first byte's value.
pub fn http_response(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b).min(data.len()));
    let limits = Limits { max_head_bytes: 4096, max_body_bytes: 64 * 1024, max_line_bytes: 4096 };
    let mut p = ResponseParser::new(limits);
    if p.feed(&data[..split]).is_ok() && p.feed(&data[split..]).is_ok() {
        let _ = p.finish();
        let _ = p.head().map(|h| h.header("content-type"));
        let _ = p.take_body();
    }
}

/// The watch stream's line splitter and the agent's handling of each line.
pub fn watch_lines(data: &[u8]) {
    let mut dec = LineDecoder::new(4096);
    let (mut agent, mut rt) = agent();
    for piece in data.chunks(7) {
        match dec.push(piece) {
            Ok(lines) => {
                for l in lines {
                    agent.on_watch_line(&l, Time(1_000_000), &mut rt);
                }
            }
            Err(_) => return,
        }
    }
    if let Some(l) = dec.finish() {
        agent.on_watch_line(&l, Time(1_000_000), &mut rt);
    }
    let _ = agent.tick(Time(2_000_000), &mut rt);
}

/// Any reply body to any of the agent's requests, and the Kubernetes types parsed from it.
pub fn agent_replies(data: &[u8]) {
    let _ = serde_json::from_slice::<Pod>(data);
    let _ = serde_json::from_slice::<PodList>(data);
    let _ = serde_json::from_slice::<WatchEvent>(data);
    let _ = serde_json::from_slice::<Status>(data);
    let (mut agent, mut rt) = agent();
    let code = data.first().map_or(200, |b| [200, 201, 404, 409, 410, 500][usize::from(*b) % 6]);
    let mut now = Time(1_000_000);
    for _ in 0..4 {
        for out in agent.tick(now, &mut rt) {
            if out.op != Op::WatchPods {
                agent.on_response(out.op, Ok((code, data)), now, &mut rt);
            }
        }
        now = now.plus_secs(11);
    }
}

/// The control plane's request reader.
pub fn http_request(data: &[u8]) {
    let mut r = data;
    if let Ok(req) = read_request(&mut r) {
        let _ = req.keep_alive();
        let _ = req.param("watch");
    }
}

/// A whole request through the control plane's API over an in-memory store.
pub fn api_request(data: &[u8]) {
    let Ok(api) = Api::new(Store::in_memory()) else { return };
    let mut r = data;
    // Several requests in a row, so a create can be followed by a patch or a delete.
    for _ in 0..4 {
        match read_request(&mut r) {
            Ok(req) => {
                let _ = api.handle(&req);
            }
            Err(_) => return,
        }
    }
}

/// The three patch kinds: the input is `DOC\0PATCH`; the first byte picks the object kind
/// whose merge keys the strategic merge uses.
pub fn patch(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(doc), Some(patch)) = (parts.next(), parts.next()) else { return };
    let (Ok(doc), Ok(patch)) = (serde_json::from_slice::<Value>(doc), serde_json::from_slice::<Value>(patch))
    else {
        return;
    };
    let _ = apply_json_patch(&doc, &patch);
    let _ = apply_merge_patch(&doc, &patch);
    let kind = ["Pod", "Node", "Event", "Lease"][usize::from(data[0]) % 4];
    let _ = apply_strategic_merge_patch(&doc, &patch, &k8s_merge_keys(kind));
}

/// Label and field selectors, and matching them against a few labels and fields.
pub fn selectors(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "3"), ("", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(s) = LabelSelector::parse(&text) {
        let _ = s.matches(&labels);
    }
    if let Ok(s) = FieldSelector::parse(&text) {
        let _ = s.matches(&|f: &str| (f == "spec.nodeName").then(|| "n1".to_string()));
        let _ = s.fields().count();
    }
}

/// A Kubernetes protobuf object body (what `kubectl create namespace` and `kubectl create
/// secret` send).
pub fn protobuf(data: &[u8]) {
    let _ = control_plane::protobuf::decode_object(data);
}

/// A containerLogs request target (`/containerLogs/ns/pod/container?query`).
pub fn log_request(data: &[u8]) {
    let _ = LogRequest::parse(&String::from_utf8_lossy(data));
}

fn agent() -> (Agent, SimRuntime) {
    let res: BTreeMap<String, String> =
        [("cpu", "2"), ("memory", "4Gi"), ("pods", "110"), ("ephemeral-storage", "20Gi")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let cfg = NodeConfig {
        name: "n1".into(),
        internal_ip: "127.0.0.1".into(),
        kubelet_port: 10250,
        capacity: res.clone(),
        allocatable: res,
        node_info: NodeSystemInfo::default(),
        pod_net: "10.88.0".into(),
    };
    (Agent::new(cfg, Time(1_000_000)), SimRuntime::new())
}
