//! Wire formats shared by the node agent (kubelet-lite), the control plane and the kernels:
//!
//! - [`percent`]: `%XX` escapes in URLs and command lines (`+` as space where the form says so);
//! - [`quantity`]: Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`), fixed point;
//! - [`time`]: RFC 3339 timestamps as `metav1.Time` and `metav1.MicroTime` carry them;
//! - [`http`]: HTTP/1.x request and response heads, on top of the `httparse` crate.
//!
//! `no_std`; the parts that return owned strings need the `alloc` feature (on by default).
//! Every parser takes untrusted text, returns a typed error or `None` and never panics.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod http;
pub mod percent;
pub mod quantity;
#[cfg(feature = "alloc")]
pub mod time;
