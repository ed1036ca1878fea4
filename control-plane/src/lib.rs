//! A kube-apiserver-compatible development control plane.
//!
//! The pure modules (selectors, patches, validation and defaulting, table conversion, the OpenAPI
//! document) are functions over `serde_json::Value` with no I/O, tested on the host. The server
//! side (TLS, tokens, the store, the REST handlers, watch, the scheduler) builds on them.

pub mod auth;
pub mod kubeconfig;
pub mod selector;
pub mod server;
pub mod store;
pub mod tls;
