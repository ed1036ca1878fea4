//! A kube-apiserver-compatible development control plane.

pub mod auth;
pub mod kubeconfig;
pub mod server;
pub mod store;
pub mod tls;
