//! A kube-apiserver-compatible development control plane.
//!
//! The pure modules (selectors, patches, validation and defaulting, table conversion, the OpenAPI
//! document) are functions over `serde_json::Value` with no I/O, tested on the host. The server
//! side (TLS, tokens, the store, the REST handlers, watch, the scheduler) builds on them.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod auth;
pub mod authz;
pub mod json;
pub mod kubeconfig;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rfc3339;
pub mod scheduler;
pub mod secret;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validate;

pub use server::{Config, Server, StartError};

/// Starts the control plane and serves until the process ends. Prints
/// `control plane ready: <url>` once it accepts connections.
pub fn run(cfg: &Config) -> Result<(), StartError> {
    let server = Server::start(cfg)?;
    scheduler::spawn(server.api());
    let api = server.api();
    std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || api.store.expire_forever(std::time::Duration::from_secs(1)))
        .map_err(StartError::Io)?;
    println!("control plane ready: {}", server.url);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.serve().map_err(StartError::Io)
}
