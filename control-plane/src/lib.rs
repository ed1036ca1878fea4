//! A kube-apiserver-compatible development control plane.
//!
//! The pure modules (selectors, patches, validation and defaulting, table conversion, the OpenAPI
//! document) are functions over `serde_json::Value` with no I/O, tested on the host.

pub mod openapi;
pub mod patch;
pub mod rfc3339;
pub mod selector;
pub mod table;
pub mod validate;
